"""The envelope wire format, version 1 (docs/envelope.md): pure parsing and encoding.

Binary, because the gateway parses one per response on its hot path and a
JSON+base64 layout would cost a third more bytes and a decode. Every
header field is authenticated: the whole header (magic through nonce) plus
the request id is the AEAD's associated data, so a changed status, content
type, key id, wrapped key or request id fails the tag like a changed byte
of ciphertext does.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final

from modelseal.crypto import AES_256_GCM, NONCE_SIZE, SM4_GCM, TAG_SIZE
from modelseal.envelope.errors import EnvelopeFormatError

MAGIC: Final = b"MSEV"
VERSION: Final = 1
#: The content type of an envelope on the wire (the plaintext's type rides inside).
MEDIA_TYPE: Final = "application/vnd.modelseal.envelope"
#: The header the gateway sends with a fresh request id; the envelope authenticates it.
REQUEST_ID_HEADER: Final = "X-Modelseal-Request-Id"

AEAD_IDS: Final[dict[int, str]] = {1: SM4_GCM, 2: AES_256_GCM}
AEAD_CODES: Final[dict[str, int]] = {name: code for code, name in AEAD_IDS.items()}

MAX_KEY_ID: Final = 255
MAX_CONTENT_TYPE: Final = 255
#: An SM2 C1C3C2 DER of a 32-byte key is ~140 bytes; 1024 leaves room and bounds parsing.
MAX_WRAPPED_KEY: Final = 1024
MAX_REQUEST_ID: Final = 128

_FIXED: Final = struct.Struct(">4sBBH")  # magic, version, aead, status
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._~-]{0,128}")
_PRINTABLE_RE: Final = re.compile(r"[\x20-\x7e]*")


def check_request_id(request_id: str) -> bytes:
    """A request id as it enters the AAD: 0-128 characters of ``[A-Za-z0-9._~-]``."""
    if not isinstance(request_id, str) or _REQUEST_ID_RE.fullmatch(request_id) is None:
        raise EnvelopeFormatError(
            f"request id must be 0-{MAX_REQUEST_ID} characters of A-Z a-z 0-9 . _ ~ -"
        )
    return request_id.encode("ascii")


@dataclass(frozen=True)
class Envelope:
    """One parsed envelope. ``header`` is the exact authenticated byte prefix."""

    aead: str
    status: int
    key_id: str
    content_type: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes  # ciphertext || tag
    header: bytes

    def aad(self, request_id: str) -> bytes:
        rid = check_request_id(request_id)
        return self.header + bytes([len(rid)]) + rid


def encode_header(
    *, aead: str, status: int, key_id: str, content_type: str, wrapped_key: bytes, nonce: bytes
) -> bytes:
    """The authenticated header; raises ``ValueError`` for values the format cannot carry."""
    if aead not in AEAD_CODES:
        raise ValueError(f"unknown AEAD {aead!r}")
    if not 100 <= status <= 599:
        raise ValueError("HTTP status must be 100..599")
    kid = key_id.encode("ascii")
    ctype = content_type.encode("ascii")
    if not 1 <= len(kid) <= MAX_KEY_ID or _PRINTABLE_RE.fullmatch(key_id) is None:
        raise ValueError("key id must be 1-255 printable ASCII characters")
    if len(ctype) > MAX_CONTENT_TYPE or _PRINTABLE_RE.fullmatch(content_type) is None:
        raise ValueError("content type must be 0-255 printable ASCII characters")
    if not 1 <= len(wrapped_key) <= MAX_WRAPPED_KEY:
        raise ValueError("wrapped key must be 1-1024 bytes")
    if len(nonce) != NONCE_SIZE:
        raise ValueError("nonce must be 12 bytes")
    return b"".join(
        (
            _FIXED.pack(MAGIC, VERSION, AEAD_CODES[aead], status),
            bytes([len(kid)]),
            kid,
            bytes([len(ctype)]),
            ctype,
            struct.pack(">H", len(wrapped_key)),
            wrapped_key,
            nonce,
        )
    )


def parse(data: bytes | bytearray | memoryview) -> Envelope:
    """Split an envelope into its fields; checks structure only, not authenticity."""
    buf = data if type(data) is bytes else bytes(data)
    if len(buf) < _FIXED.size or buf[:4] != MAGIC:
        raise EnvelopeFormatError("not a modelseal envelope (bad magic)")
    _, version, aead_code, status = _FIXED.unpack_from(buf)
    if version != VERSION:
        raise EnvelopeFormatError(f"envelope version {version} is not supported (this reads 1)")
    aead = AEAD_IDS.get(aead_code)
    if aead is None:
        raise EnvelopeFormatError(f"unknown envelope AEAD id {aead_code}")
    if not 100 <= status <= 599:
        raise EnvelopeFormatError("envelope status out of range")
    pos = _FIXED.size
    try:
        kid_len = buf[pos]
        kid_raw = buf[pos + 1 : pos + 1 + kid_len]
        pos += 1 + kid_len
        ctype_len = buf[pos]
        ctype_raw = buf[pos + 1 : pos + 1 + ctype_len]
        pos += 1 + ctype_len
        (wk_len,) = struct.unpack_from(">H", buf, pos)
        pos += 2
    except (IndexError, struct.error):
        raise EnvelopeFormatError("envelope truncated in its header") from None
    wrapped = buf[pos : pos + wk_len]
    pos += wk_len
    nonce = buf[pos : pos + NONCE_SIZE]
    pos += NONCE_SIZE
    if len(kid_raw) != kid_len or len(ctype_raw) != ctype_len or len(nonce) != NONCE_SIZE:
        raise EnvelopeFormatError("envelope truncated in its header")
    if kid_len == 0 or not 1 <= wk_len <= MAX_WRAPPED_KEY:
        raise EnvelopeFormatError("envelope key id or wrapped key has an invalid length")
    try:
        key_id = kid_raw.decode("ascii")
        content_type = ctype_raw.decode("ascii")
    except UnicodeDecodeError:
        raise EnvelopeFormatError("envelope key id or content type is not ASCII") from None
    # ASCII (checked by the decode above) and printable is exactly [\x20-\x7e]
    if not key_id.isprintable() or not content_type.isprintable():
        raise EnvelopeFormatError("envelope key id or content type is not printable")
    if len(buf) - pos < TAG_SIZE:
        raise EnvelopeFormatError("envelope ciphertext shorter than its tag")
    return Envelope(
        aead=aead,
        status=status,
        key_id=key_id,
        content_type=content_type,
        wrapped_key=wrapped,
        nonce=nonce,
        ciphertext=buf[pos:],
        header=buf[:pos],
    )
