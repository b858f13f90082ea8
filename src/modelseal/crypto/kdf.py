"""HKDF-SHA256 (RFC 5869), the one key-derivation function modelseal uses.

Every derived key is separated by an ``info`` label naming its purpose and
format version, so a key derived for one construction is never valid in another.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)
