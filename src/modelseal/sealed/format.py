"""The ``.mseal`` v1 format: constants, header, key schedule (docs/format-mseal.md).

Pure functions over bytes; the writer and reader do the I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Final

from modelseal._json import StrictJSONError, strict_loads
from modelseal.crypto import (
    AEAD_ALGORITHMS,
    NONCE_SIZE,
    TAG_SIZE,
    Aead,
    ContentKey,
    aead_key_size,
    b64url,
    b64url_decode,
    hkdf_sha256,
    new_aead,
)
from modelseal.errors import (
    FormatError,
    HeaderIntegrityError,
    TruncatedError,
    UnsupportedVersionError,
    WrongKeyError,
)

MAGIC: Final = b"\x89MSEAL\r\n"
VERSION: Final = 1
PREAMBLE_SIZE: Final = 16
MAC_SIZE: Final = 32
SALT_SIZE: Final = 32
NONCE_PREFIX_SIZE: Final = 7
MAX_HEADER_SIZE: Final = 1 << 20
MIN_CHUNK_SIZE: Final = 1 << 10
MAX_CHUNK_SIZE: Final = 1 << 26
DEFAULT_CHUNK_SIZE: Final = 1 << 20
MAX_CHUNKS: Final = 1 << 32

FRAMEWORK_HINTS: Final = ("safetensors", "torch", "torchscript", "onnx", "paddle", "bytes")
KINDS: Final = ("file", "directory")

_INFO_MAC: Final = b"modelseal/mseal/v1/header-mac"
_INFO_PAYLOAD: Final = b"modelseal/mseal/v1/payload/"

_HEADER_FIELDS: Final = frozenset(
    {
        "version",
        "aead",
        "chunk_size",
        "salt",
        "key_id",
        "model_id",
        "framework",
        "kind",
        "payload_size",
        "entries",
        "created_at",
    }
)


@dataclass(frozen=True)
class Entry:
    """One file of the sealed model, as a byte range of the payload plaintext."""

    path: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Header:
    """The public header. Everything here is readable without the key."""

    aead: str
    chunk_size: int
    salt: bytes
    key_id: str
    model_id: str | None
    framework: str
    kind: str
    payload_size: int
    entries: tuple[Entry, ...]
    created_at: str
    version: int = VERSION
    _entry_index: dict[str, Entry] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._entry_index.update({e.path: e for e in self.entries})

    @property
    def chunk_count(self) -> int:
        return max(1, math.ceil(self.payload_size / self.chunk_size))

    def entry(self, path: str) -> Entry:
        try:
            return self._entry_index[path]
        except KeyError:
            raise FormatError(f"no entry {path!r} in this sealed model") from None

    def chunk_plaintext_size(self, index: int) -> int:
        if index < self.chunk_count - 1:
            return self.chunk_size
        return self.payload_size - self.chunk_size * (self.chunk_count - 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "aead": self.aead,
            "chunk_size": self.chunk_size,
            "salt": b64url(self.salt),
            "key_id": self.key_id,
            "model_id": self.model_id,
            "framework": self.framework,
            "kind": self.kind,
            "payload_size": self.payload_size,
            "entries": [{"path": e.path, "offset": e.offset, "size": e.size} for e in self.entries],
            "created_at": self.created_at,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode("utf-8")


def validate_entry_path(path: str) -> str:
    """Reject anything that could escape a directory when a user extracts entries."""
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise FormatError(f"invalid entry path {path!r}")
    return path


def _req(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = obj[name]
    # bool is an int subclass; a JSON true must not pass as a size.
    if isinstance(value, bool) and kind is not bool:
        raise FormatError(f"header field {name!r} has the wrong type")
    if not isinstance(value, kind):
        raise FormatError(f"header field {name!r} has the wrong type")
    return value


def parse_header(raw: bytes) -> Header:
    """Parse and validate header bytes; raises :class:`FormatError` on any deviation."""
    try:
        obj = strict_loads(raw)
    except StrictJSONError as exc:
        raise FormatError(f"header is not strict UTF-8 JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise FormatError("header is not a JSON object")
    keys = set(obj)
    if keys != _HEADER_FIELDS:
        missing = sorted(_HEADER_FIELDS - keys)
        extra = sorted(keys - _HEADER_FIELDS)
        raise FormatError(f"header fields differ from v1 (missing {missing}, unknown {extra})")
    version = _req(obj, "version", int)
    if version != VERSION:
        raise UnsupportedVersionError(f"header version {version} is not supported")
    aead = _req(obj, "aead", str)
    if aead not in AEAD_ALGORITHMS:
        raise UnsupportedVersionError(f"unknown AEAD {aead!r}")
    chunk_size = _req(obj, "chunk_size", int)
    if not (MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE and chunk_size & (chunk_size - 1) == 0):
        raise FormatError(f"chunk size {chunk_size} is not a power of two in [1 KiB, 64 MiB]")
    try:
        salt = b64url_decode(_req(obj, "salt", str))
    except ValueError:
        raise FormatError("salt is not base64url") from None
    if len(salt) != SALT_SIZE:
        raise FormatError("salt must be 32 bytes")
    key_id = _req(obj, "key_id", str)
    if not 1 <= len(key_id) <= 128:
        raise FormatError("key id has an invalid length")
    model_id = obj["model_id"]
    if model_id is not None and not isinstance(model_id, str):
        raise FormatError("model_id must be a string or null")
    framework = _req(obj, "framework", str)
    if framework not in FRAMEWORK_HINTS:
        raise FormatError(f"unknown framework hint {framework!r}")
    kind = _req(obj, "kind", str)
    if kind not in KINDS:
        raise FormatError(f"unknown kind {kind!r}")
    payload_size = _req(obj, "payload_size", int)
    if payload_size < 0:
        raise FormatError("payload size is negative")
    created_at = _req(obj, "created_at", str)
    raw_entries = _req(obj, "entries", list)
    entries: list[Entry] = []
    seen: set[str] = set()
    offset = 0
    for item in raw_entries:
        if not isinstance(item, dict) or set(item) != {"path", "offset", "size"}:
            raise FormatError("each entry needs exactly path, offset and size")
        path = validate_entry_path(_req(item, "path", str))
        e_off = _req(item, "offset", int)
        e_size = _req(item, "size", int)
        if path in seen:
            raise FormatError(f"duplicate entry {path!r}")
        if e_off != offset or e_size < 0:
            raise FormatError("entries must be contiguous and in payload order")
        seen.add(path)
        entries.append(Entry(path, e_off, e_size))
        offset += e_size
    if offset != payload_size:
        raise FormatError("entry sizes do not add up to the payload size")
    if kind == "file" and len(entries) != 1:
        raise FormatError("a sealed file has exactly one entry")
    header = Header(
        aead=aead,
        chunk_size=chunk_size,
        salt=salt,
        key_id=key_id,
        model_id=model_id,
        framework=framework,
        kind=kind,
        payload_size=payload_size,
        entries=tuple(entries),
        created_at=created_at,
    )
    if header.chunk_count > MAX_CHUNKS:
        raise FormatError("payload needs more chunks than the 32-bit counter allows")
    return header


def encode_preamble(header_len: int) -> bytes:
    return MAGIC + bytes([VERSION, 0, 0, 0]) + struct.pack(">I", header_len)


def parse_preamble(preamble: bytes) -> int:
    """Return ``header_len`` after checking magic, version and reserved bytes."""
    if len(preamble) < PREAMBLE_SIZE:
        if MAGIC.startswith(preamble[: len(MAGIC)]) and preamble:
            raise TruncatedError("file ends inside the preamble")
        raise FormatError("not a .mseal file (too short)")
    if preamble[:8] != MAGIC:
        raise FormatError("not a .mseal file (bad magic)")
    if preamble[8] != VERSION:
        raise UnsupportedVersionError(
            f".mseal format version {preamble[8]} is not supported (this release reads {VERSION})"
        )
    if preamble[9:12] != b"\x00\x00\x00":
        raise FormatError("reserved preamble bytes are not zero")
    (header_len,) = struct.unpack(">I", preamble[12:16])
    if not 2 <= header_len <= MAX_HEADER_SIZE:
        raise FormatError(f"header length {header_len} out of range")
    return int(header_len)


def expected_file_size(header_len: int, header: Header) -> int:
    return (
        PREAMBLE_SIZE + header_len + MAC_SIZE + header.payload_size + TAG_SIZE * header.chunk_count
    )


@dataclass(frozen=True)
class PayloadKeys:
    """Per-file keys derived from the content key and the header salt."""

    mac_key: bytes
    aead: Aead
    nonce_prefix: bytes

    def nonce(self, index: int, last: bool) -> bytes:
        return self.nonce_prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def derive_keys(content_key: ContentKey, salt: bytes, aead: str) -> PayloadKeys:
    cek = content_key.raw()
    mac_key = hkdf_sha256(cek, salt=salt, info=_INFO_MAC, length=32)
    k = aead_key_size(aead)
    okm = hkdf_sha256(
        cek, salt=salt, info=_INFO_PAYLOAD + aead.encode("ascii"), length=k + NONCE_PREFIX_SIZE
    )
    assert NONCE_PREFIX_SIZE + 5 == NONCE_SIZE
    return PayloadKeys(mac_key=mac_key, aead=new_aead(aead, okm[:k]), nonce_prefix=okm[k:])


def header_mac(mac_key: bytes, preamble_and_header: bytes) -> bytes:
    return hmac.new(mac_key, preamble_and_header, hashlib.sha256).digest()


def check_key(header: Header, content_key: ContentKey) -> None:
    if not hmac.compare_digest(header.key_id.encode(), content_key.key_id.encode()):
        raise WrongKeyError(
            f"this file was sealed with key {header.key_id}, not with key {content_key.key_id}"
        )


def check_header_mac(keys: PayloadKeys, preamble_and_header: bytes, mac: bytes) -> None:
    if not hmac.compare_digest(header_mac(keys.mac_key, preamble_and_header), mac):
        raise HeaderIntegrityError("the header was modified (authentication code mismatch)")


def chunk_aad(preamble_and_header: bytes, mac: bytes) -> bytes:
    return hashlib.sha256(preamble_and_header + mac).digest()
