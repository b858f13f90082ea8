"""Unlock codes: round trip, published vectors, every refusal, typo detection."""

from __future__ import annotations

import hashlib
import hmac
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.errors import FormatError, IntegrityError, MissingDependencyError, ModelsealError
from modelseal.guard.unlock import (
    CODE_CHARS,
    MAX_GRANT_HOURS,
    MAX_SERIAL,
    UnlockCodeExpiredError,
    UnlockCodeInvalidError,
    UnlockCodeMalformedError,
    UnlockCodeUsedError,
    UnlockError,
    UnlockGrant,
    check_symbol,
    issue_unlock_code,
    normalize_unlock_code,
    unlock_attempt_allowed,
    unlock_qr,
    verify_unlock_code,
)
from tests.conftest import load_vectors

SECRET = hashlib.sha256(b"test unlock secret").digest()
LIC, DEV = "lic-42", "sha256:0a1b2c3d"
NOW = datetime(2026, 11, 23, 14, 37, 12, tzinfo=UTC)
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ALIASES = {"O": "0", "I": "1", "L": "1"}

ERRORS: dict[str, type[UnlockError]] = {
    "malformed": UnlockCodeMalformedError,
    "invalid": UnlockCodeInvalidError,
    "expired": UnlockCodeExpiredError,
    "used": UnlockCodeUsedError,
}


def issue(**kw: Any) -> str:
    args: dict[str, Any] = {
        "license_id": LIC,
        "device_id": DEV,
        "valid_until": NOW + timedelta(hours=2),
        "serial": 7,
        "grant_hours": 48,
    }
    args.update(kw)
    return issue_unlock_code(SECRET, **args)


def check(code: str, **kw: Any) -> UnlockGrant:
    args: dict[str, Any] = {"license_id": LIC, "device_id": DEV, "now": NOW, "used_serials": ()}
    args.update(kw)
    return verify_unlock_code(SECRET, code, **args)


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- round trip --------------------------------------------------------------


def test_round_trip() -> None:
    code = issue()
    assert len(code) == CODE_CHARS + 4 and code.count("-") == 4
    assert all(len(g) == 5 for g in code.split("-"))
    grant = check(code)
    assert grant == UnlockGrant(LIC, DEV, 7, 48, datetime(2026, 11, 23, 16, 37, tzinfo=UTC))
    assert grant.grant == timedelta(hours=48)
    assert grant.unlocked_until(NOW) == NOW + timedelta(hours=48)


def test_entry_is_forgiving_about_case_dashes_spaces_and_read_alikes() -> None:
    code = issue()
    compact = code.replace("-", "")
    variants = [
        code.lower(),
        compact,
        " ".join(code.split("-")),
        f"  {code}\n",
        code.replace("0", "O").replace("1", "l"),
    ]
    for variant in variants:
        assert check(variant).serial == 7
        assert normalize_unlock_code(variant) == code


def test_expiry_is_rounded_down_to_the_minute() -> None:
    code = issue(valid_until=datetime(2026, 11, 23, 15, 0, 59, tzinfo=UTC))
    assert check(code).valid_until == datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    assert check(code, now=datetime(2026, 11, 23, 14, 59, 59, 999999, tzinfo=UTC))
    with pytest.raises(UnlockCodeExpiredError):
        check(code, now=datetime(2026, 11, 23, 15, 0, tzinfo=UTC))


@settings(max_examples=200, deadline=None)
@given(
    minute=st.integers(0, (1 << 26) - 1),
    serial=st.integers(0, MAX_SERIAL),
    grant=st.integers(1, MAX_GRANT_HOURS),
    lic=st.text(min_size=1, max_size=40),
    dev=st.text(min_size=1, max_size=40),
)
def test_round_trip_any_fields(minute: int, serial: int, grant: int, lic: str, dev: str) -> None:
    until = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
    code = issue_unlock_code(
        SECRET, license_id=lic, device_id=dev, valid_until=until, serial=serial, grant_hours=grant
    )
    got = verify_unlock_code(
        SECRET,
        code,
        license_id=lic,
        device_id=dev,
        now=until - timedelta(seconds=1),
        used_serials={serial + 1},
    )
    assert (got.serial, got.grant_hours, got.valid_until) == (serial, grant, until)


# --- vectors ------------------------------------------------------------------


def independent_code(
    secret: bytes, lic: str, dev: str, minute: int, serial: int, grant: int
) -> str:
    """The spec, re-implemented from docs/guard-audit-unlock.md without the module."""
    payload = ((1 << 52) | (minute << 26) | (serial << 10) | grant).to_bytes(7, "big")

    def lp(s: str) -> bytes:
        return len(s.encode()).to_bytes(2, "big") + s.encode()

    mac = hmac.new(secret, b"modelseal/unlock/v1" + lp(lic) + lp(dev) + payload, "sha256")
    bits = int.from_bytes(payload + mac.digest()[:8], "big")
    symbols = [(bits >> (5 * (23 - i))) & 31 for i in range(24)]
    acc = 0
    for s in symbols:  # Horner over GF(32) with x^5 + x^2 + 1
        acc ^= s
        acc <<= 1
        if acc & 32:
            acc ^= 0b100101
    chars = "".join(ALPHABET[s] for s in [*symbols, acc])
    return "-".join(chars[i : i + 5] for i in range(0, 25, 5))


def test_vectors() -> None:
    doc = load_vectors("unlock-v1.json")
    assert doc["version"] == 1 and doc["alphabet"] == ALPHABET
    assert len(doc["vectors"]) >= 4 and len(doc["negative"]) >= 8
    for v in doc["vectors"]:
        secret = bytes.fromhex(v["unlock_secret"])
        until = parse_ts(v["valid_until"])
        code = issue_unlock_code(
            secret,
            license_id=v["license_id"],
            device_id=v["device_id"],
            valid_until=until,
            serial=v["serial"],
            grant_hours=v["grant_hours"],
        )
        assert code == v["code"], v["name"]
        assert v["expiry_minute"] == int(until.timestamp()) // 60
        assert code == independent_code(
            secret,
            v["license_id"],
            v["device_id"],
            v["expiry_minute"],
            v["serial"],
            v["grant_hours"],
        )
        mac_input = bytes.fromhex(v["mac_input"])
        assert mac_input.endswith(bytes.fromhex(v["payload"]))
        assert hmac.new(secret, mac_input, "sha256").digest()[:8].hex() == v["mac"]
        grant = verify_unlock_code(
            secret,
            v["code"],
            license_id=v["license_id"],
            device_id=v["device_id"],
            now=parse_ts(v["accept_at"]),
            used_serials=[],
        )
        assert (grant.serial, grant.grant_hours) == (v["serial"], v["grant_hours"])
    for n in doc["negative"]:
        with pytest.raises(ERRORS[n["error"]]):
            verify_unlock_code(
                bytes.fromhex(n["unlock_secret"]),
                n["code"],
                license_id=n["license_id"],
                device_id=n["device_id"],
                now=parse_ts(n["now"]),
                used_serials=n["used_serials"],
            )


# --- refusals -------------------------------------------------------------------


def test_each_refusal_is_its_own_error() -> None:
    code = issue()
    with pytest.raises(UnlockCodeMalformedError) as malformed:
        check(code[:-1])
    assert isinstance(malformed.value, FormatError) and malformed.value.exit_code == 3
    with pytest.raises(UnlockCodeInvalidError) as invalid:
        check(code, device_id="sha256:ffffffff")
    assert isinstance(invalid.value, IntegrityError) and invalid.value.exit_code == 4
    with pytest.raises(UnlockCodeInvalidError):
        check(code, license_id="lic-43")
    with pytest.raises(UnlockCodeInvalidError):
        verify_unlock_code(bytes(32), code, license_id=LIC, device_id=DEV, now=NOW, used_serials=())
    with pytest.raises(UnlockCodeExpiredError, match="expired at 2026-11-23 16:37"):
        check(code, now=NOW + timedelta(hours=3))
    with pytest.raises(UnlockCodeUsedError, match="#7"):
        check(code, used_serials={1, 7})
    # a used code that is also expired reads as used: the more useful answer
    with pytest.raises(UnlockCodeUsedError):
        check(code, used_serials=[7], now=NOW + timedelta(days=1))
    for cls in ERRORS.values():
        assert issubclass(cls, UnlockError) and issubclass(cls, ModelsealError)
    assert not issubclass(UnlockCodeExpiredError, IntegrityError | FormatError)
    assert not issubclass(UnlockCodeUsedError, IntegrityError | FormatError)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ABCDE",
        "U" * 25,
        "*" * 25,
        "ABCDE-FGHJK-MNPQR-STVWX-YZ0123",
        "ÄBCDE-FGHJK-MNPQR-STVWX-YZ012",
    ],
)
def test_not_a_code(bad: str) -> None:
    with pytest.raises(UnlockCodeMalformedError):
        check(bad)
    with pytest.raises(UnlockCodeMalformedError):
        normalize_unlock_code(bad)


def test_version_and_range_checks() -> None:
    # a well-formed string of another version: re-encode with a valid check character
    symbols = [0] * 24  # version 0, everything zero
    code = "".join(ALPHABET[s] for s in symbols) + ALPHABET[check_symbol(symbols)]
    with pytest.raises(UnlockCodeMalformedError, match="version 0"):
        check(code)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"serial": -1}, "serial"),
        ({"serial": MAX_SERIAL + 1}, "serial"),
        ({"grant_hours": 0}, "grant_hours"),
        ({"grant_hours": MAX_GRANT_HOURS + 1}, "grant_hours"),
        ({"valid_until": datetime(2026, 1, 1)}, "timezone"),
        ({"valid_until": datetime(2100, 1, 1, tzinfo=UTC)}, "2097"),
        ({"license_id": ""}, "license_id"),
        ({"device_id": "x" * 70000}, "device_id"),
    ],
)
def test_issue_rejects_bad_arguments(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        issue(**kw)


def test_secret_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        issue_unlock_code(
            b"short", license_id=LIC, device_id=DEV, valid_until=NOW, serial=1, grant_hours=1
        )


# --- typos ----------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(pos=st.integers(0, CODE_CHARS - 1), char=st.sampled_from(ALPHABET + "OILU*#a"))
def test_single_substitution_is_never_accepted(pos: int, char: str) -> None:
    compact = issue().replace("-", "")
    typo = compact[:pos] + char + compact[pos + 1 :]
    same_value = ALIASES.get(char.upper(), char.upper()) == compact[pos]
    if same_value:
        assert check(typo).serial == 7  # "o" for "0": the same code, not a typo
        return
    with pytest.raises((UnlockCodeMalformedError, UnlockCodeInvalidError)) as exc:
        check(typo)
    # in fact the check character catches every single substitution before the MAC
    assert isinstance(exc.value, UnlockCodeMalformedError)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), serial=st.integers(0, MAX_SERIAL))
def test_swapping_two_characters_is_caught_by_the_check(data: st.DataObject, serial: int) -> None:
    compact = issue(serial=serial).replace("-", "")
    i = data.draw(st.integers(0, CODE_CHARS - 3))
    j = data.draw(st.integers(i + 1, CODE_CHARS - 2))  # two data characters
    if compact[i] == compact[j]:
        return
    chars = list(compact)
    chars[i], chars[j] = chars[j], chars[i]
    with pytest.raises(UnlockCodeMalformedError, match="mistyped"):
        check("".join(chars))


# --- rate limit and QR ------------------------------------------------------------


def test_rate_limit() -> None:
    failures = [NOW - timedelta(minutes=m) for m in (1, 5, 10, 20)]
    assert unlock_attempt_allowed(failures, NOW)
    assert not unlock_attempt_allowed([*failures, NOW], NOW)
    assert unlock_attempt_allowed([*failures, NOW - timedelta(hours=2)], NOW)
    assert unlock_attempt_allowed([*failures, NOW + timedelta(minutes=1)], NOW)  # future: ignored
    assert not unlock_attempt_allowed(failures, NOW, limit=4)


def test_qr_text_and_svg() -> None:
    # segno is a required dependency: a missing one is a broken install, not a skip
    import segno  # noqa: F401
    code = issue()
    text = unlock_qr(code.lower())
    assert "█" in text and len(text.splitlines()) > 10
    svg = unlock_qr(code, kind="svg")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    with pytest.raises(UnlockCodeMalformedError):
        unlock_qr("nope")


def test_qr_without_segno(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "segno", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match="pip install segno"):
        unlock_qr(issue())
