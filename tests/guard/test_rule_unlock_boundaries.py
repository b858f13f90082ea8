"""Rules at the edges of unlock codes (docs/guard-audit-unlock.md):

* the license and device ids a code is bound to are 1 to 65535 bytes of
  UTF-8 (length-prefixed in the derivation input, so the prefix cannot
  overflow; license/unlockcodes.py since unlock codes v2);
* the rate limit counts failures in the half-open window ``(now - window, now]``:
  a failure exactly one window old no longer counts.

Found by mutation testing (tests/MUTATION.md): ``>`` for ``>=`` at either
edge survived the suite.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelseal.guard.unlock import UnlockCodeInvalidError, unlock_attempt_allowed
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
