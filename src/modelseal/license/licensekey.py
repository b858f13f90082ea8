"""License keys: what a customer types or pastes to activate (docs/controlplane.md).

Format: 24 random Crockford base32 characters (120 bits) and one Luhn
mod 32 check character, shown as five groups of five::

    7KQ2M-XD9TA-0RW4P-HC6NB-ZE31F

120 random bits make a key unguessable even without the server's rate
limits; the check character catches every single mistyped character and
most adjacent swaps before a request is sent. Reading is forgiving the way
Crockford's alphabet intends: case, hyphens and spaces are ignored, and
``I``/``L`` read as ``1`` and ``O`` as ``0``.

The key also names the device's **activation salt** (``activation_salt``):
a device activating online derives its request's salt from the key, so the
same device activating the same license again produces the same component
digests and the server can recognise it (no second seat), while requests
for different licenses stay unlinkable (different keys, different salts).
"""

from __future__ import annotations

import secrets
from typing import Final

from modelseal.crypto import hkdf_sha256
from modelseal.errors import FormatError

ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_INDEX: Final = {c: i for i, c in enumerate(ALPHABET)}
_ALIASES: Final = {"I": "1", "L": "1", "O": "0"}
BODY_LENGTH: Final = 24
KEY_LENGTH: Final = BODY_LENGTH + 1
_SALT_INFO: Final = b"modelseal/device/v2/activation-salt"


class LicenseKeyFormatError(FormatError):
    """The text is not a well-formed license key (wrong length, letter or check character)."""


def _check_char(body: str) -> str:
    """Luhn mod N (N = 32): detects every single substitution."""
    factor, total, n = 2, 0, len(ALPHABET)
    for char in reversed(body):
        addend = factor * _INDEX[char]
        factor = 1 if factor == 2 else 2
        total += addend // n + addend % n
    return ALPHABET[(n - total % n) % n]


def _group(key: str) -> str:
    return "-".join(key[i : i + 5] for i in range(0, len(key), 5))


def generate_license_key() -> str:
    """A fresh license key, grouped for reading."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return _group(body + _check_char(body))


def normalize_license_key(text: str) -> str:
    """The canonical grouped form of ``text``, or :class:`LicenseKeyFormatError`."""
    if not isinstance(text, str) or len(text) > 64:
        raise LicenseKeyFormatError("a license key is 25 characters, like 7KQ2M-XD9TA-...")
    chars = [_ALIASES.get(c, c) for c in text.upper() if c not in "- \t"]
    if len(chars) != KEY_LENGTH:
        raise LicenseKeyFormatError(
            f"a license key has {KEY_LENGTH} letters and digits, this one has {len(chars)}"
        )
    bad = sorted({c for c in chars if c not in _INDEX})
    if bad:
        raise LicenseKeyFormatError(f"a license key does not contain {', '.join(map(repr, bad))}")
    key = "".join(chars)
    if _check_char(key[:-1]) != key[-1]:
        raise LicenseKeyFormatError("the license key has a typo (its check character is wrong)")
    return _group(key)


def looks_like_license_key(text: str) -> bool:
    try:
        normalize_license_key(text)
    except LicenseKeyFormatError:
        return False
    return True


def activation_salt(license_key: str) -> bytes:
    """The activation request's salt for this key (32 bytes; see the module docstring)."""
    canonical = normalize_license_key(license_key).replace("-", "")
    return hkdf_sha256(canonical.encode("ascii"), salt=b"", info=_SALT_INFO, length=32)
