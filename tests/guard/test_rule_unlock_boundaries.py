"""Rules at the edges of unlock codes (docs/guard-audit-unlock.md):

* the license and device ids a code is bound to are 1 to 65535 bytes of
  UTF-8 (length-prefixed in the derivation input, so the prefix cannot
  overflow; license/unlockcodes.py since unlock codes v2);
* the rate limit counts failures in the half-open window ``(now - window, now]``:
  a failure exactly one window old no longer counts; it runs only on an
  aware time (a ``tzinfo`` that gives no offset is naive);
* a code grants 1 to ``MAX_GRANT_HOURS`` (720) hours, both ends included;
* each refusal says what is wrong, in words an operator can act on over the
  phone: a typo is "mistyped" and names the (1-based) character, a genuine
  code of another license is "not issued for this license and device";
* the SVG QR code is drawn at 4 px a module, without an XML declaration (it is
  embedded in HTML).

Found by mutation testing (tests/MUTATION.md): ``>`` for ``>=`` at either
edge survived the suite.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, tzinfo

import pytest

from modelseal.guard.unlock import (
    MAX_GRANT_HOURS,
    UnlockCodeInvalidError,
    UnlockCodeMalformedError,
    unlock_attempt_allowed,
    unlock_qr,
)
from modelseal.license.unlockcodes import make_verifiers
from tests.guard.test_unlock import DEV, LIC, NOW, SEED, check, issue


@pytest.mark.parametrize("which", ["license_id", "device_id"])
def test_ids_up_to_65535_bytes_are_bound(which: str) -> None:
    longest = "é" * 32767 + "x"  # 65535 bytes of UTF-8, 32768 characters
    assert len(longest.encode()) == 0xFFFF
    ids = {"license_id": LIC, "device_id": DEV, which: longest}
    verifiers = make_verifiers(SEED, **ids, count=8)
    code = issue(**ids)
    assert check(code, **ids, verifiers=verifiers).serial == 7
    with pytest.raises(UnlockCodeInvalidError):
        check(code, **{**ids, which: longest[:-1] + "y"}, verifiers=verifiers)


@pytest.mark.parametrize("which", ["license_id", "device_id"])
@pytest.mark.parametrize("value", ["é" * 32768, "x" * 0x10000, ""])
def test_ids_out_of_range_are_refused(which: str, value: str) -> None:
    with pytest.raises(ValueError, match="1 to 65535 bytes"):
        issue(**{which: value})


def test_a_failure_exactly_one_window_old_no_longer_counts() -> None:
    window = timedelta(hours=1)
    just_outside = [NOW - window]
    just_inside = [NOW - window + timedelta(microseconds=1)]
    assert unlock_attempt_allowed(just_outside, NOW, limit=1, window=window)
    assert not unlock_attempt_allowed(just_inside, NOW, limit=1, window=window)
    assert not unlock_attempt_allowed([NOW], NOW, limit=1, window=window)  # now itself counts


class _NoOffset(tzinfo):
    """A tzinfo that knows no offset: the datetime is naive for all purposes."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None

    def tzname(self, dt: datetime | None) -> None:
        return None

    def dst(self, dt: datetime | None) -> None:
        return None


def test_the_limiter_refuses_a_time_without_an_offset() -> None:
    disguised = NOW.replace(tzinfo=_NoOffset())
    with pytest.raises(ValueError, match="timezone-aware"):
        unlock_attempt_allowed([], disguised)
    with pytest.raises(ValueError, match="timezone-aware"):
        unlock_attempt_allowed([], NOW.replace(tzinfo=None))


def test_grant_hours_run_from_1_to_720_inclusive() -> None:
    assert MAX_GRANT_HOURS == 720
    assert check(issue(), grant_hours=720).grant_hours == 720
    assert check(issue(), grant_hours=1).grant_hours == 1
    for bad in (0, 721):
        with pytest.raises(ValueError, match=r"^grant_hours must be in 1\.\.720$"):
            check(issue(), grant_hours=bad)


def _typo_at(code: str, position: int) -> str:
    """``code`` with its ``position``-th (1-based, dashes not counted) character
    replaced by a character outside the alphabet."""
    chars = [c for c in code if c != "-"]
    chars[position - 1] = "U"
    return "".join(chars)


def test_every_refusal_says_what_is_wrong() -> None:
    code = issue()
    cases: list[tuple[object, type[Exception], str]] = [
        (12345, UnlockCodeMalformedError, "an unlock code is text"),
        ("ABCDE", UnlockCodeMalformedError, "an unlock code has 25 characters, this one has 5"),
        (
            _typo_at(code, 1),
            UnlockCodeMalformedError,
            "character 1 ('U') is not in the code alphabet",
        ),
        (
            _typo_at(code, 7),
            UnlockCodeMalformedError,
            "character 7 ('U') is not in the code alphabet",
        ),
    ]
    # one substituted character: the check character catches it
    chars = [c for c in code if c != "-"]
    chars[3] = "0" if chars[3] != "0" else "1"
    cases.append(
        (
            "".join(chars),
            UnlockCodeMalformedError,
            "the code was mistyped (check character does not match)",
        )
    )
    not_issued = "the unlock code was not issued for this license and device"
    cases.append((issue(serial=17), UnlockCodeInvalidError, not_issued))  # past the license's 16
    cases.append((issue(license_id="lic-other"), UnlockCodeInvalidError, not_issued))
    for value, kind, message in cases:
        with pytest.raises(kind) as info:
            check(value)
        assert str(info.value) == message, value
    with pytest.raises(UnlockCodeInvalidError) as info:
        check(code, verifiers=["not base64url!"] * 16)
    assert str(info.value) == not_issued


def test_the_svg_qr_is_four_pixels_a_module_without_xml_declaration() -> None:
    svg = unlock_qr(issue(), kind="svg")
    assert svg.startswith("<svg")
    # a 29-character code is a version 2 QR: 25 modules, plus a 4-module quiet zone each side
    assert re.search(r'width="132"', svg) and re.search(r'height="132"', svg), svg[:200]
    with pytest.raises(ValueError, match=r"^kind must be 'text' or 'svg'$"):
        unlock_qr(issue(), kind="png")  # type: ignore[arg-type]
