"""Unlock codes v2: round trip, published vectors, every refusal, typo detection,
and the property the design exists for: the verifier side cannot mint a code."""

from __future__ import annotations

import base64
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
    MAX_SERIAL,
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
from modelseal.license.unlockcodes import make_verifiers
from tests.conftest import load_vectors

SEED = hashlib.sha256(b"test unlock seed").digest()
LIC, DEV = "lic-42", "sha256:0a1b2c3d"
NOW = datetime(2026, 11, 23, 14, 37, 12, tzinfo=UTC)
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ALIASES = {"O": "0", "I": "1", "L": "1"}
VERIFIERS = make_verifiers(SEED, license_id=LIC, device_id=DEV, count=16)

ERRORS: dict[str, type[UnlockError]] = {
    "malformed": UnlockCodeMalformedError,
    "invalid": UnlockCodeInvalidError,
    "used": UnlockCodeUsedError,
}


def issue(**kw: Any) -> str:
    args: dict[str, Any] = {"license_id": LIC, "device_id": DEV, "serial": 7}
    args.update(kw)
    return issue_unlock_code(SEED, **args)


def check(code: str, **kw: Any) -> UnlockGrant:
    args: dict[str, Any] = {
        "license_id": LIC,
        "device_id": DEV,
        "verifiers": VERIFIERS,
        "grant_hours": 48,
        "used_serials": (),
    }
    args.update(kw)
    return verify_unlock_code(code, **args)


# --- round trip --------------------------------------------------------------


def test_round_trip() -> None:
    code = issue()
    assert len(code) == CODE_CHARS + 4 and code.count("-") == 4
    assert all(len(g) == 5 for g in code.split("-"))
    grant = check(code)
    assert grant == UnlockGrant(LIC, DEV, 7, 48)
    assert grant.grant == timedelta(hours=48)
    assert grant.unlocked_until(NOW) == NOW + timedelta(hours=48)
    for serial in range(16):
        assert check(issue(serial=serial)).serial == serial


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


@settings(max_examples=100, deadline=None)
@given(
    serial=st.integers(0, 63),
    lic=st.text(min_size=1, max_size=40),
    dev=st.text(min_size=1, max_size=40),
)
def test_round_trip_any_fields(serial: int, lic: str, dev: str) -> None:
    verifiers = make_verifiers(SEED, license_id=lic, device_id=dev, count=64)
    code = issue_unlock_code(SEED, license_id=lic, device_id=dev, serial=serial)
    got = verify_unlock_code(
        code,
        license_id=lic,
        device_id=dev,
        verifiers=verifiers,
        grant_hours=1,
        used_serials={serial + 1},
    )
    assert got.serial == serial


# --- the verifier side cannot mint ----------------------------------------------


def test_the_license_carries_only_hashes_of_the_codes() -> None:
    """What a device holds (the verifiers) is a hash of each code's secret part:
    no code's bits appear in it, and no verifier verifies another serial's code."""
    codes = [issue(serial=s) for s in range(16)]
    raw = [base64.urlsafe_b64decode(v + "==") for v in VERIFIERS]
    assert all(len(r) == 16 for r in raw) and len(set(raw)) == 16
    for serial, code in enumerate(codes):
        secret = _raw(code)[2:]
        assert all(secret not in r for r in raw)
        for other in (VERIFIERS[:serial] + VERIFIERS[serial + 1 :])[:3]:
            shifted = list(VERIFIERS)
            shifted[serial] = other
            with pytest.raises(UnlockCodeInvalidError):
                check(code, verifiers=shifted)


def _raw(code: str) -> bytes:
    compact = code.replace("-", "")
    n = 0
    for ch in compact[:24]:
        n = (n << 5) | ALPHABET.index(ch)
    return n.to_bytes(15, "big")


# --- vectors ------------------------------------------------------------------


def lp(text: str) -> bytes:
    return len(text.encode()).to_bytes(2, "big") + text.encode()


def independent_code(seed: bytes, lic: str, dev: str, serial: int) -> tuple[str, str]:
    """The spec, re-implemented from docs/guard-audit-unlock.md without the module:
    ``(code, base64url verifier)``."""
    ids = lp(lic) + lp(dev) + serial.to_bytes(2, "big")
    secret = hmac.new(seed, b"modelseal/unlock/v2/code" + ids, "sha256").digest()[:13]
    verifier = hashlib.sha256(b"modelseal/unlock/v2/verifier" + ids + secret).digest()[:16]
    bits = int.from_bytes(((2 << 12) | serial).to_bytes(2, "big") + secret, "big")
    symbols = [(bits >> (5 * (23 - i))) & 31 for i in range(24)]
    acc = 0
    for s in symbols:  # Horner over GF(32) with x^5 + x^2 + 1
        acc ^= s
        acc <<= 1
        if acc & 32:
            acc ^= 0b100101
    chars = "".join(ALPHABET[s] for s in [*symbols, acc])
    code = "-".join(chars[i : i + 5] for i in range(0, 25, 5))
    return code, base64.urlsafe_b64encode(verifier).rstrip(b"=").decode()


def test_vectors() -> None:
    doc = load_vectors("unlock-v2.json")
    assert doc["version"] == 2 and doc["alphabet"] == ALPHABET
    assert len(doc["vectors"]) >= 4 and len(doc["negative"]) >= 7
    for v in doc["vectors"]:
        seed = bytes.fromhex(v["unlock_seed"])
        lic, dev, serial = v["license_id"], v["device_id"], v["serial"]
        code = issue_unlock_code(seed, license_id=lic, device_id=dev, serial=serial)
        assert code == v["code"], v["name"]
        assert (code, v["verifier"]) == independent_code(seed, lic, dev, serial)
        assert (
            hmac.new(seed, bytes.fromhex(v["code_input"]), "sha256").digest()[:13].hex()
            == v["secret"]
        )
        verifier_input = bytes.fromhex(v["verifier_input"])
        assert verifier_input.endswith(bytes.fromhex(v["secret"]))
        assert (
            base64.urlsafe_b64encode(hashlib.sha256(verifier_input).digest()[:16])
            .rstrip(b"=")
            .decode()
            == v["verifier"]
        )
        verifiers = make_verifiers(seed, license_id=lic, device_id=dev, count=serial + 1)
        assert verifiers[serial] == v["verifier"]
        grant = verify_unlock_code(
            v["code"],
            license_id=lic,
            device_id=dev,
            verifiers=verifiers,
            grant_hours=24,
            used_serials=[],
        )
        assert grant.serial == serial
    for n in doc["negative"]:
        with pytest.raises(ERRORS[n["error"]]):
            verify_unlock_code(
                n["code"],
                license_id=n["license_id"],
                device_id=n["device_id"],
                verifiers=n["verifiers"],
                grant_hours=24,
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
    with pytest.raises(UnlockCodeInvalidError):  # another seed: not this license's code
        check(issue_unlock_code(bytes(32), license_id=LIC, device_id=DEV, serial=7))
    with pytest.raises(UnlockCodeInvalidError):  # a serial beyond the license's codes
        check(issue(serial=16))
    with pytest.raises(UnlockCodeInvalidError):
        check(code, verifiers=[*VERIFIERS[:7], "not base64url!!!!!!!!!"])
    with pytest.raises(UnlockCodeUsedError, match="#7"):
        check(code, used_serials={1, 7})
    for cls in ERRORS.values():
        assert issubclass(cls, UnlockError) and issubclass(cls, ModelsealError)
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


def test_version_checks() -> None:
    # a well-formed string of another version: re-encode with a valid check character
    symbols = [0] * 24  # version 0, everything zero
    code = "".join(ALPHABET[s] for s in symbols) + ALPHABET[check_symbol(symbols)]
    with pytest.raises(UnlockCodeMalformedError, match="version 0"):
        check(code)
    # a v1 code (HMAC under a secret the device could unwrap) is refused as such
    bits = 1 << 116  # version nibble 1 in the first 4 of 120 bits
    symbols = [(bits >> (5 * (23 - i))) & 31 for i in range(24)]
    code = "".join(ALPHABET[s] for s in symbols) + ALPHABET[check_symbol(symbols)]
    with pytest.raises(UnlockCodeMalformedError, match="version 1"):
        check(code)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"serial": -1}, "serial"),
        ({"serial": MAX_SERIAL + 1}, "serial"),
        ({"license_id": ""}, "license_id"),
        ({"device_id": "x" * 70000}, "device_id"),
    ],
)
def test_issue_rejects_bad_arguments(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        issue(**kw)


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        issue_unlock_code(b"short", license_id=LIC, device_id=DEV, serial=1)
    with pytest.raises(ValueError, match="1 to 4096"):
        make_verifiers(SEED, license_id=LIC, device_id=DEV, count=0)


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
    with pytest.raises(ValueError, match="timezone"):
        unlock_attempt_allowed([], datetime(2026, 1, 1))
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
