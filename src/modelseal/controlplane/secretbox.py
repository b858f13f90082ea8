"""Secrets at rest (vendor signing keys, content keys, device credentials).

Each secret is sealed with AES-256-GCM under a key derived from the master
key (HKDF, one key per purpose), with the row it belongs to as associated
data: a ciphertext copied into another row or column does not open. The
database alone therefore gives nothing away; the master key lives in a
separate file (``MODELSEAL_MASTER_KEY_FILE``, or ``master.key`` created
with mode 0600 in the data directory on first start).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any, Final

from modelseal.crypto import b64url, b64url_decode, hkdf_sha256, new_aead
from modelseal.errors import DecryptionError, KeyFileError

MASTER_KEY_SIZE: Final = 32
_PREFIX: Final = "v1."


def load_or_create_master_key(path: Path, *, create: bool = True) -> bytes:
    """Read the 32-byte master key; create it (0600, O_EXCL) if absent and allowed."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise KeyFileError(f"no master key at {path}") from None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(MASTER_KEY_SIZE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_master_key(path, create=False)  # another process won
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    except OSError as exc:
        raise KeyFileError(f"cannot read the master key {path}: {exc.strerror}") from None
    if len(data) != MASTER_KEY_SIZE:
        raise KeyFileError(f"the master key {path} must be exactly {MASTER_KEY_SIZE} bytes")
    return data


class SecretBox:
    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != MASTER_KEY_SIZE:
            raise ValueError("master key must be 32 bytes")
        self._master = master_key
        #: the PKCS#11 token holding signing keys, when configured (controlplane/hsm.py)
        self.hsm: Any = None
        self._lookup = hkdf_sha256(master_key, salt=b"", info=b"modelseal/cp/lookup", length=32)

    def seal(self, plaintext: bytes, *, purpose: str, row: str) -> str:
        aead = new_aead(
            "aes-256-gcm",
            hkdf_sha256(
                self._master, salt=b"", info=b"modelseal/cp/box/" + purpose.encode(), length=32
            ),
        )
        return _PREFIX + b64url(aead.seal_random(plaintext, row.encode()))

    def open(self, sealed: str, *, purpose: str, row: str) -> bytes:
        if not sealed.startswith(_PREFIX):
            raise DecryptionError(f"stored {purpose} has an unknown format")
        aead = new_aead(
            "aes-256-gcm",
            hkdf_sha256(
                self._master, salt=b"", info=b"modelseal/cp/box/" + purpose.encode(), length=32
            ),
        )
        try:
            return aead.open_random(b64url_decode(sealed[len(_PREFIX) :]), row.encode())
        except ValueError:
            raise DecryptionError(f"stored {purpose} is damaged") from None
        except DecryptionError:
            raise DecryptionError(
                f"stored {purpose} does not open: wrong master key or a moved ciphertext"
            ) from None

    def derive(self, label: str) -> bytes:
        """A 32-byte key for one use (``label``), e.g. the audit MAC or the session cookie
        signature: HKDF keeps each useless for anything else."""
        return hkdf_sha256(
            self._master, salt=b"", info=b"modelseal/cp/" + label.encode(), length=32
        )

    def lookup_hash(self, value: str) -> str:
        """Keyed hash for finding a row by a secret (license keys) without storing it."""
        return hmac.new(self._lookup, value.encode(), hashlib.sha256).hexdigest()


def token_hash(token: str) -> str:
    """API tokens carry 256 random bits: a plain SHA-256 is enough to store them."""
    return hashlib.sha256(token.encode()).hexdigest()
