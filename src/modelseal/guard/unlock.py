"""Emergency unlock codes: short enough to read over the phone, bound to one device.

When the guard blocks a licensed device for a reason its operator cannot fix
at once (a clock problem, offline beyond the grace), the vendor's support
issues a code that grants hours of grace on that device only. A code is 25
Crockford base32 characters, e.g. ``2WH8A-R000G-C5VZ0-59NZ1-RKE8T``:

    payload (7 bytes) = version:4 | expiry minute:26 | serial:16 | grant hours:10
    mac (8 bytes)     = HMAC-SHA256(unlock_secret, "modelseal/unlock/v1"
                          || u16 len || license id || u16 len || device id || payload)[:8]
    code              = base32(payload || mac) (24 chars) || check char

The check character (a weighted sum over GF(32)) catches every single-
character typo and every swap of two characters before the MAC is tried, so
a typo reads as "mistyped", not "forged". The 64-bit MAC is a margin against
online guessing, which the guard rate-limits and audits. Spec, security
argument and test vectors: docs/guard-audit-unlock.md, tests/vectors/unlock-v1.json.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import io
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from modelseal.errors import FormatError, IntegrityError, MissingDependencyError, ModelsealError

VERSION: Final = 1
DOMAIN: Final = b"modelseal/unlock/v1"
SECRET_SIZE: Final = 32
PAYLOAD_SIZE: Final = 7
MAC_SIZE: Final = 8
DATA_CHARS: Final = (PAYLOAD_SIZE + MAC_SIZE) * 8 // 5  # 24
CODE_CHARS: Final = DATA_CHARS + 1  # plus the check character
GROUP_SIZE: Final = 5
MAX_SERIAL: Final = 0xFFFF
MAX_GRANT_HOURS: Final = 720  # 30 days: beyond that, issue a new license
MAX_EXPIRY_MINUTE: Final = (1 << 26) - 1  # minutes since the Unix epoch: until 2097-08

ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
_VALUES: Final[dict[str, int]] = {c: i for i, c in enumerate(ALPHABET)}
_VALUES.update({"O": 0, "I": 1, "L": 1})  # Crockford's read-alike aliases
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


# --- errors ------------------------------------------------------------------


class UnlockError(ModelsealError):
    """An unlock code was refused (catch this for all the reasons below)."""


class UnlockCodeMalformedError(UnlockError, FormatError):
    """Not a code: wrong length, a character outside the alphabet, or a typo (check char)."""


class UnlockCodeInvalidError(UnlockError, IntegrityError):
    """Well-formed, but not issued for this license and device (MAC mismatch)."""


class UnlockCodeExpiredError(UnlockError):
    """A genuine code entered after its expiry."""


class UnlockCodeUsedError(UnlockError):
    """A genuine code whose serial was already used on this device (single use)."""


# --- the grant ---------------------------------------------------------------


@dataclass(frozen=True)
class UnlockGrant:
    """What a verified code allows. ``valid_until`` ends the code's acceptance,
    ``grant_hours`` is the grace it grants once entered."""

    license_id: str
    device_id: str
    serial: int
    grant_hours: int
    valid_until: datetime

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
    return n.to_bytes(PAYLOAD_SIZE + MAC_SIZE, "big")


def normalize_unlock_code(code: str) -> str:
    """The canonical grouped upper-case form, or :class:`UnlockCodeMalformedError`.

    Unverified; the guard logs this form in the audit record of an attempt.
    """
    return _encode(_decode(code))


def _aware(name: str, when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return when


def _id_bytes(name: str, value: str) -> bytes:
    raw = value.encode("utf-8")
    if not raw or len(raw) > 0xFFFF:
        raise ValueError(f"{name} must be 1 to 65535 bytes of UTF-8")
    return len(raw).to_bytes(2, "big") + raw


def _mac(secret: bytes, license_id: str, device_id: str, payload: bytes) -> bytes:
    if len(secret) != SECRET_SIZE:
        raise ValueError(f"the unlock secret is {SECRET_SIZE} bytes")
    msg = DOMAIN + _id_bytes("license_id", license_id) + _id_bytes("device_id", device_id) + payload
    return hmac.new(secret, msg, hashlib.sha256).digest()[:MAC_SIZE]


def _pack(expiry_minute: int, serial: int, grant_hours: int) -> bytes:
    n = (VERSION << 52) | (expiry_minute << 26) | (serial << 10) | grant_hours
    return n.to_bytes(PAYLOAD_SIZE, "big")


def _unpack(payload: bytes) -> tuple[int, int, int, int]:
    n = int.from_bytes(payload, "big")
    return n >> 52, (n >> 26) & MAX_EXPIRY_MINUTE, (n >> 10) & MAX_SERIAL, n & 0x3FF


# --- issue and verify --------------------------------------------------------


def issue_unlock_code(
    secret: bytes,
    *,
    license_id: str,
    device_id: str,
    valid_until: datetime,
    serial: int,
    grant_hours: int,
) -> str:
    """A code for one device, accepted until ``valid_until`` (rounded down to the
    minute, so never later than asked), granting ``grant_hours`` (1..720) once.

    The vendor keeps ``serial`` unique per license (the device refuses a
    serial it has seen).
    """
    valid_until = _aware("valid_until", valid_until)
    minute = int((valid_until - _EPOCH) // timedelta(minutes=1))
    if not 0 <= minute <= MAX_EXPIRY_MINUTE:
        raise ValueError("valid_until must lie between 1970 and 2097")
    if not 0 <= serial <= MAX_SERIAL:
        raise ValueError(f"serial must be in 0..{MAX_SERIAL}")
    if not 1 <= grant_hours <= MAX_GRANT_HOURS:
        raise ValueError(f"grant_hours must be in 1..{MAX_GRANT_HOURS}")
    payload = _pack(minute, serial, grant_hours)
    return _encode(payload + _mac(secret, license_id, device_id, payload))


def verify_unlock_code(
    secret: bytes,
    code: str,
    *,
    license_id: str,
    device_id: str,
    now: datetime,
    used_serials: Collection[int],
) -> UnlockGrant:
    """Check a code entered on this device; return what it grants.

    Order: shape and check character (:class:`UnlockCodeMalformedError`),
    version, MAC (:class:`UnlockCodeInvalidError`: also the answer for a code
    of another license or device), single use (:class:`UnlockCodeUsedError`),
    expiry (:class:`UnlockCodeExpiredError`). ``now`` should be the guard's
    trusted time (``clock.trusted_now``), so a clock set back cannot revive an
    expired code. The caller records the serial as used and audits every
    attempt, accepted or not.
    """
    now = _aware("now", now)
    raw = _decode(code)
    payload, tag = raw[:PAYLOAD_SIZE], raw[PAYLOAD_SIZE:]
    version, minute, serial, grant_hours = _unpack(payload)
    if version != VERSION:
        raise UnlockCodeMalformedError(f"unlock code version {version} is not supported")
    if not hmac.compare_digest(_mac(secret, license_id, device_id, payload), tag):
        raise UnlockCodeInvalidError("the unlock code was not issued for this license and device")
    if not 1 <= grant_hours <= MAX_GRANT_HOURS:
        raise UnlockCodeMalformedError("the unlock code grants an impossible number of hours")
    if serial in used_serials:
        raise UnlockCodeUsedError(f"unlock code #{serial} was already used on this device")
    valid_until = _EPOCH + timedelta(minutes=minute)
    if now >= valid_until:
        raise UnlockCodeExpiredError(
            f"unlock code #{serial} expired at {valid_until:%Y-%m-%d %H:%M} UTC"
        )
    return UnlockGrant(
        license_id=license_id,
        device_id=device_id,
        serial=serial,
        grant_hours=grant_hours,
        valid_until=valid_until,
    )


def unlock_attempt_allowed(
    recent_failures: Iterable[datetime],
    now: datetime,
    *,
    limit: int = 5,
    window: timedelta = timedelta(hours=1),
) -> bool:
    """Rate limit for entering codes: fewer than ``limit`` failures in ``window``.

    With the defaults an attacker gets 43,800 guesses a year against a 2^64
    MAC; the guard persists the failure times in its state.
    """
    now = _aware("now", now)
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
    "UnlockCodeExpiredError",
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
