"""Emergency unlock codes: short enough to read over the phone, minted only by the vendor.

When the guard blocks a licensed device for a reason its operator cannot fix
at once (a clock problem, offline beyond the grace), the vendor's support
reads out one of the license's one-time codes; the guard grants the
license's ``unlock.hours`` of grace once. A code is 25 Crockford base32
characters, e.g. ``28000-6KQ4G-...``:

    raw (15 bytes) = version:4 (2) | serial:12 || secret (13 bytes)
    secret         = HMAC-SHA256(seed, "modelseal/unlock/v2/code" || ids || serial)[:13]
    code           = base32(raw) (24 chars) || check char

The vendor keeps ``seed``; the license carries only
``verifier = SHA-256("modelseal/unlock/v2/verifier" || ids || serial || secret)[:16]``
per serial (:mod:`modelseal.license.unlockcodes`). So a device that opens
everything in its license still cannot mint a code: that is a 2^104
preimage search, not a public-API call (the v1 codes were an HMAC under a
secret the bound device could unwrap). The check character (a weighted sum
over GF(32)) catches every single-character typo and every swap of two
characters before the verifier is tried, so a typo reads as "mistyped", not
"forged". Spec and vectors: docs/guard-audit-unlock.md, tests/vectors/unlock-v2.json.
"""

from __future__ import annotations

import hmac
import importlib
import io
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from modelseal.crypto import b64url_decode
from modelseal.errors import FormatError, IntegrityError, MissingDependencyError, ModelsealError
from modelseal.license.unlockcodes import (
    MAX_CODES,
    SECRET_SIZE,
    VERSION,
    code_secret,
    code_verifier,
)

RAW_SIZE: Final = 2 + SECRET_SIZE  # 15 bytes = 120 bits = 24 base32 characters
DATA_CHARS: Final = RAW_SIZE * 8 // 5  # 24
CODE_CHARS: Final = DATA_CHARS + 1  # plus the check character
GROUP_SIZE: Final = 5
MAX_SERIAL: Final = MAX_CODES - 1
MAX_GRANT_HOURS: Final = 720  # 30 days: beyond that, issue a new license

ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
_VALUES: Final[dict[str, int]] = {c: i for i, c in enumerate(ALPHABET)}
_VALUES.update({"O": 0, "I": 1, "L": 1})  # Crockford's read-alike aliases


# --- errors ------------------------------------------------------------------


class UnlockError(ModelsealError):
    """An unlock code was refused (catch this for all the reasons below)."""


class UnlockCodeMalformedError(UnlockError, FormatError):
    """Not a code: wrong length, a character outside the alphabet, or a typo (check char)."""


class UnlockCodeInvalidError(UnlockError, IntegrityError):
    """Well-formed, but not one of this license's codes for this device."""


class UnlockCodeUsedError(UnlockError):
    """A genuine code whose serial was already used on this device (single use)."""


# --- the grant ---------------------------------------------------------------


@dataclass(frozen=True)
class UnlockGrant:
    """What a verified code allows: ``grant_hours`` of grace, once."""

    license_id: str
    device_id: str
    serial: int
    grant_hours: int

    @property
    def grant(self) -> timedelta:
        return timedelta(hours=self.grant_hours)

    def unlocked_until(self, now: datetime) -> datetime:
        """When grace granted at ``now`` (the guard's trusted time) runs out."""
        return now + self.grant


# --- encoding ----------------------------------------------------------------


def _mul_x(v: int) -> int:
    """Multiply by x in GF(32) = GF(2)[x]/(x^5 + x^2 + 1) (primitive: x has order 31)."""
    v <<= 1
    return v ^ 0b100101 if v & 0b100000 else v


def check_symbol(values: Iterable[int]) -> int:
    """sum(v_i * x^(n-i)) over GF(32), by Horner. Distinct non-zero weights for
    n <= 31 symbols, so any one substitution or any swap of two unequal
    symbols changes the sum."""
    acc = 0
    for v in values:
        acc = _mul_x(acc ^ v)
    return acc


def _group(chars: str) -> str:
    return "-".join(chars[i : i + GROUP_SIZE] for i in range(0, len(chars), GROUP_SIZE))


def _encode(raw: bytes) -> str:
    n = int.from_bytes(raw, "big")
    values = [(n >> (5 * (DATA_CHARS - 1 - i))) & 31 for i in range(DATA_CHARS)]
    values.append(check_symbol(values))
    return _group("".join(ALPHABET[v] for v in values))


def _decode(code: str) -> bytes:
    if not isinstance(code, str):
        raise UnlockCodeMalformedError("an unlock code is text")
    compact = "".join(code.split()).replace("-", "").upper()
    if len(compact) != CODE_CHARS:
        raise UnlockCodeMalformedError(
            f"an unlock code has {CODE_CHARS} characters, this one has {len(compact)}"
        )
    values = []
    for pos, ch in enumerate(compact, start=1):
        if ch not in _VALUES:
            raise UnlockCodeMalformedError(f"character {pos} ({ch!r}) is not in the code alphabet")
        values.append(_VALUES[ch])
    if check_symbol(values[:DATA_CHARS]) != values[DATA_CHARS]:
        raise UnlockCodeMalformedError("the code was mistyped (check character does not match)")
    n = 0
    for v in values[:DATA_CHARS]:
        n = (n << 5) | v
    return n.to_bytes(RAW_SIZE, "big")


def normalize_unlock_code(code: str) -> str:
    """The canonical grouped upper-case form, or :class:`UnlockCodeMalformedError`.

    Unverified; the guard logs this form in the audit record of an attempt.
    """
    return _encode(_decode(code))


def _pack(serial: int, secret: bytes) -> bytes:
    return ((VERSION << 12) | serial).to_bytes(2, "big") + secret


# --- issue and verify --------------------------------------------------------


def issue_unlock_code(seed: bytes, *, license_id: str, device_id: str, serial: int) -> str:
    """Code ``serial`` of a license (vendor side: needs the seed the license never carries)."""
    if not 0 <= serial <= MAX_SERIAL:
        raise ValueError(f"serial must be in 0..{MAX_SERIAL}")
    secret = code_secret(seed, license_id=license_id, device_id=device_id, serial=serial)
    return _encode(_pack(serial, secret))


def verify_unlock_code(
    code: str,
    *,
    license_id: str,
    device_id: str,
    verifiers: Sequence[str],
    grant_hours: int,
    used_serials: Collection[int],
) -> UnlockGrant:
    """Check a code entered on this device against the license's verifiers.

    Order: shape and check character (:class:`UnlockCodeMalformedError`),
    version, serial within the license's codes and the verifier
    (:class:`UnlockCodeInvalidError`: also the answer for a code of another
    license or device), single use (:class:`UnlockCodeUsedError`). The
    caller records the serial as used and audits every attempt.
    """
    raw = _decode(code)
    head, secret = int.from_bytes(raw[:2], "big"), raw[2:]
    version, serial = head >> 12, head & MAX_SERIAL
    if version != VERSION:
        raise UnlockCodeMalformedError(f"unlock code version {version} is not supported")
    if not 1 <= grant_hours <= MAX_GRANT_HOURS:
        raise ValueError(f"grant_hours must be in 1..{MAX_GRANT_HOURS}")
    if serial >= len(verifiers):
        raise UnlockCodeInvalidError("the unlock code was not issued for this license and device")
    want = code_verifier(secret, license_id=license_id, device_id=device_id, serial=serial)
    try:
        expected = b64url_decode(verifiers[serial])
    except ValueError:
        expected = b""
    if not hmac.compare_digest(want, expected):
        raise UnlockCodeInvalidError("the unlock code was not issued for this license and device")
    if serial in used_serials:
        raise UnlockCodeUsedError(f"unlock code #{serial} was already used on this device")
    return UnlockGrant(
        license_id=license_id, device_id=device_id, serial=serial, grant_hours=grant_hours
    )


def unlock_attempt_allowed(
    recent_failures: Iterable[datetime],
    now: datetime,
    *,
    limit: int = 5,
    window: timedelta = timedelta(hours=1),
) -> bool:
    """Rate limit for entering codes: fewer than ``limit`` failures in ``window``.

    Defence in depth: a guess succeeds with probability 2^-104 whatever the
    rate, so a limiter reset by restoring an old state (docs/threat-model.md)
    buys nothing; it keeps a stuck or scripted operator from filling the
    audit log. The guard persists the failure times in its state.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return sum(1 for t in recent_failures if now - window < t <= now) < limit


def unlock_qr(code: str, *, kind: Literal["text", "svg"] = "text") -> str:
    """The code as a QR code: block characters for a terminal, or an SVG document.

    Needs the optional ``segno`` package; the code is normalised first, so a
    malformed code fails here rather than producing a useless picture.
    """
    text = normalize_unlock_code(code)
    try:
        segno: Any = importlib.import_module("segno")
    except ImportError:
        raise MissingDependencyError(
            "showing an unlock code as a QR code needs segno: pip install segno"
        ) from None
    qr = segno.make(text, error="m", micro=False)
    if kind == "svg":
        buf = io.BytesIO()
        qr.save(buf, kind="svg", scale=4, xmldecl=False)
        return buf.getvalue().decode("utf-8")
    if kind == "text":
        out = io.StringIO()
        qr.terminal(out=out, compact=True)
        return out.getvalue()
    raise ValueError("kind must be 'text' or 'svg'")


__all__ = [
    "CODE_CHARS",
    "MAX_GRANT_HOURS",
    "MAX_SERIAL",
    "UnlockCodeInvalidError",
    "UnlockCodeMalformedError",
    "UnlockCodeUsedError",
    "UnlockError",
    "UnlockGrant",
    "check_symbol",
    "issue_unlock_code",
    "normalize_unlock_code",
    "unlock_attempt_allowed",
    "unlock_qr",
    "verify_unlock_code",
]
