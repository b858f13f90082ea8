"""Rule: every unlock attempt is audited as docs/guard-audit-unlock.md's table
says, in the same transaction as the counters it changes:

* a refused code: ``event="unlock_refused"``, ``reason="unlock_invalid"``,
  ``data={"detail": <the refusal's message>}``;
* an accepted one: ``event="unlock_used"``, ``reason="unlock_used"``,
  ``data={"serial", "until"}`` with ``until`` the end of the window returned;
* a license without unlock codes (an unbound license carries none) refuses
  every code as ``UnlockCodeInvalidError``, audited, never a crash;
* a disk error while applying a code is ``GuardStorageError``
  (``storage_unavailable``), never an ``OSError`` or a crash.

Found by mutation testing (tests/MUTATION.md, guard/core.py): the records'
reason, detail, serial and until in ``Guard._apply_unlock``, its unbound
branch and ``unlock``'s storage error could change without a failing test.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.guard import GuardStorageError
from modelseal.guard.audit import iter_records
from modelseal.guard.unlock import UnlockCodeInvalidError
from tests.guard_core.test_guard import FakeClock, _code, _guard, _license
from tests.license.conftest import NOW

Model = tuple[Path, ContentKey]


def _unlock_records(path: Path) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [
        (r["event"], r["reason"], r["data"])
        for r in iter_records(path)
        if r["event"].startswith("unlock_")
    ]


def test_each_attempt_is_recorded_with_its_reason_and_details(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    clock = FakeClock(NOW)
    guard = _guard(vendor, _license(vendor, cek), tmp_path, clock)
    wrong = _code(guard.license, serial=2, seed=bytes(32))
    with pytest.raises(UnlockCodeInvalidError) as info:
        guard.unlock(wrong)
    refusal = str(info.value)
    until = guard.unlock(_code(guard.license, serial=3))
    assert until == NOW + timedelta(hours=24)
    assert _unlock_records(guard.audit_path) == [
        ("unlock_refused", "unlock_invalid", {"detail": refusal}),
        ("unlock_used", "unlock_used", {"serial": 3, "until": until.isoformat()}),
    ]
    assert refusal == "the unlock code was not issued for this license and device"


def test_a_rate_limited_attempt_is_recorded_with_why(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    guard = _guard(vendor, _license(vendor, cek), tmp_path, FakeClock(NOW))
    for serial in range(5):
        with pytest.raises(UnlockCodeInvalidError):
            guard.unlock(_code(guard.license, serial=serial, seed=bytes(32)))
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked below
        guard.unlock(_code(guard.license, serial=6))
    assert type(info.value).__name__ == "UnlockRateLimitedError"
    assert str(info.value) == "too many wrong unlock codes; try again later"
    assert _unlock_records(guard.audit_path)[-1] == (
        "unlock_refused",
        "unlock_invalid",
        {"detail": "too many wrong unlock codes; try again later"},
    )


def test_a_license_without_unlock_codes_refuses_every_code_audited(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    token = _license(vendor, cek, request=None, threshold=None, content_keys=[])
    guard = _guard(vendor, token, tmp_path, FakeClock(NOW))
    assert guard.license.claims.device is None and guard.license.claims.unlock is None
    with pytest.raises(UnlockCodeInvalidError) as info:
        guard.unlock("0000-0000-0000-0000-0000-0")
    assert str(info.value) == "the license carries no unlock codes"
    assert _unlock_records(guard.audit_path) == [
        ("unlock_refused", "unlock_invalid", {"detail": "the license carries no unlock codes"})
    ]


def test_a_disk_error_while_unlocking_is_a_storage_refusal(
    vendor: PrivateKey, model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cek = model
    guard = _guard(vendor, _license(vendor, cek), tmp_path, FakeClock(NOW))

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(guard, "_apply_unlock", full_disk)
    with pytest.raises(GuardStorageError) as info:
        guard.unlock(_code(guard.license, serial=1))
    assert info.value.reason == "storage_unavailable"
    assert str(info.value) == "guard state or audit log: No space left on device"
