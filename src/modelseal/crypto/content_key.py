"""The content key: the one secret that opens a sealed model.

A content key is 32 random bytes. Each ``.mseal`` file derives its own
payload key from it (HKDF with a per-file salt), so one content key can
seal several files and versions without nonce reuse, and works for both
AEADs (AES-256-GCM takes 32 derived bytes, SM4-GCM 16).

On disk it is a JSON Web Key (RFC 7517, ``kty: oct``) written with mode
0600, carrying its RFC 7638 thumbprint as ``kid``; ``.mseal`` headers name
the key by that id, so a wrong key is reported as such instead of as a
corrupt file.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path
from typing import Final

from modelseal.crypto.keys import Pathish, b64url, b64url_decode, jwk_thumbprint
from modelseal.errors import KeyFileError

CONTENT_KEY_SIZE: Final = 32
_USE: Final = "modelseal-content-key"


class ContentKey:
    """A 256-bit symmetric key with its key id. ``repr`` never shows the key."""

    __slots__ = ("_key", "_kid")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != CONTENT_KEY_SIZE:
            raise KeyFileError(f"a content key is exactly {CONTENT_KEY_SIZE} bytes")
        self._key = bytes(key)
        self._kid = jwk_thumbprint({"k": b64url(self._key), "kty": "oct"})

    @classmethod
    def generate(cls) -> ContentKey:
        return cls(os.urandom(CONTENT_KEY_SIZE))

    @property
    def key_id(self) -> str:
        return self._kid

    def raw(self) -> bytes:
        """The key bytes: for the crypto layer and key wrapping, not for display."""
        return self._key

    def to_jwk(self) -> dict[str, str]:
        return {"kty": "oct", "use": _USE, "kid": self._kid, "k": b64url(self._key)}

    def save(self, path: Pathish, *, overwrite: bool = False) -> None:
        """Write as JWK JSON, mode 0600 from the first byte, atomically.

        An existing file is refused unless ``overwrite=True``: the content key
        is the only thing that opens the models sealed with it, and one that is
        overwritten cannot be recovered.
        """
        from modelseal._fs import write_file

        write_file(path, self.to_jwk_bytes(), mode=0o600, overwrite=overwrite)

    def to_jwk_bytes(self) -> bytes:
        """The key file's bytes (what :meth:`save` writes)."""
        return (json.dumps(self.to_jwk(), indent=2) + "\n").encode()

    @classmethod
    def from_jwk(cls, jwk: object) -> ContentKey:
        if (
            not isinstance(jwk, dict)
            or jwk.get("kty") != "oct"
            or not isinstance(jwk.get("k"), str)
        ):
            raise KeyFileError("not a content key (expected a JWK with kty 'oct')")
        if jwk.get("use", _USE) != _USE:
            raise KeyFileError(f"JWK use is {jwk.get('use')!r}, not a modelseal content key")
        try:
            raw = b64url_decode(jwk["k"])
        except ValueError:
            raise KeyFileError("content key 'k' is not base64url") from None
        key = cls(raw)
        kid = jwk.get("kid")
        if kid is not None and not hmac.compare_digest(str(kid), key.key_id):
            # A kid that does not match k means the file was edited or damaged.
            raise KeyFileError("content key file is damaged: kid does not match the key")
        return key

    @classmethod
    def load(cls, path: Pathish) -> ContentKey:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read content key file {path}: {exc}") from None
        try:
            jwk = json.loads(text)
        except json.JSONDecodeError:
            raise KeyFileError(f"{path} is not a content key file (not JSON)") from None
        return cls.from_jwk(jwk)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContentKey) and hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self._kid)

    def __repr__(self) -> str:
        return f"ContentKey(key_id={self._kid!r})"
