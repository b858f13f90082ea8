"""Unlock-code verifiers a license carries: the device can check a code, never make one.

The vendor keeps a random 32-byte seed per license; code ``serial`` is a
104-bit secret derived from it, and the license carries only a 128-bit hash
of each code (``verifiers[serial]``). A device that opens everything in its
license therefore holds nothing that mints a code: finding one from its
verifier is a 2^104 preimage search (spec: docs/guard-audit-unlock.md §2).

Pure functions over bytes; the code's text form (base32, check character)
lives in :mod:`modelseal.guard.unlock`. Here because the issuer computes the
verifiers and the license package never imports the guard.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from modelseal.crypto import b64url

VERSION: Final = 2
SEED_SIZE: Final = 32
SECRET_SIZE: Final = 13  # 104 bits: the part of a 25-character code that is secret
VERIFIER_SIZE: Final = 16
MAX_CODES: Final = 1 << 12  # serials are 12 bits in the code
CODE_LABEL: Final = b"modelseal/unlock/v2/code"
VERIFIER_LABEL: Final = b"modelseal/unlock/v2/verifier"


def _ids(license_id: str, device_id: str, serial: int) -> bytes:
    out = b""
    for name, value in (("license_id", license_id), ("device_id", device_id)):
        raw = value.encode("utf-8")
        if not raw or len(raw) > 0xFFFF:
            raise ValueError(f"{name} must be 1 to 65535 bytes of UTF-8")
        out += len(raw).to_bytes(2, "big") + raw
    if not 0 <= serial < MAX_CODES:
        raise ValueError(f"serial must be in 0..{MAX_CODES - 1}")
    return out + serial.to_bytes(2, "big")


def code_secret(seed: bytes, *, license_id: str, device_id: str, serial: int) -> bytes:
    """The secret of code ``serial``: HMAC-SHA256(seed, label || ids || serial)[:13]."""
    if len(seed) != SEED_SIZE:
        raise ValueError(f"the unlock seed is {SEED_SIZE} bytes")
    msg = CODE_LABEL + _ids(license_id, device_id, serial)
    return hmac.new(seed, msg, hashlib.sha256).digest()[:SECRET_SIZE]


def code_verifier(secret: bytes, *, license_id: str, device_id: str, serial: int) -> bytes:
    """SHA-256(label || ids || serial || secret)[:16]: what the license carries.

    The ids and serial in the input make every verifier its own target, so
    one brute-force search cannot test a guess against all codes of all
    licenses at once.
    """
    if len(secret) != SECRET_SIZE:
        raise ValueError(f"a code secret is {SECRET_SIZE} bytes")
    msg = VERIFIER_LABEL + _ids(license_id, device_id, serial) + secret
    return hashlib.sha256(msg).digest()[:VERIFIER_SIZE]


def make_verifiers(seed: bytes, *, license_id: str, device_id: str, count: int) -> tuple[str, ...]:
    """The base64url verifiers of codes 0..count-1, for the license's ``unlock`` claim."""
    if not 1 <= count <= MAX_CODES:
        raise ValueError(f"a license carries 1 to {MAX_CODES} unlock codes")
    return tuple(
        b64url(
            code_verifier(
                code_secret(seed, license_id=license_id, device_id=device_id, serial=s),
                license_id=license_id,
                device_id=device_id,
                serial=s,
            )
        )
        for s in range(count)
    )


__all__ = [
    "MAX_CODES",
    "SECRET_SIZE",
    "SEED_SIZE",
    "VERIFIER_SIZE",
    "VERSION",
    "code_secret",
    "code_verifier",
    "make_verifiers",
]
