"""Storage failures reach callers as typed refusals, whatever else fails with them.

Rules (docs/guard-audit-unlock.md; ``GuardStorageError``): a state that
cannot be written or read is refused as ``storage_unavailable`` (not a
verdict on the license: the next call retries). When the state write fails,
the audit records it would have anchored are taken back; if taking them back
fails too (the disk, or a log found changed meanwhile), that second failure
is swallowed and the caller still sees the storage refusal, never a raw
``OSError`` or audit error. ``usage()`` refuses the same way, and a deleted
state file is tampering that says so. ``close`` (run at exit too) never
raises for the state it could not update.

Found by mutation testing (tests/MUTATION.md, guard/core.py: ``_Txn.take_back``
#2-#5 and ``close`` #9-#12, the errors they swallow; ``usage`` #3, #6-#8,
its refusals; none of these had a test in the module's selection).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.guard import NotLicensedError
from modelseal.guard.audit import AuditLog, AuditTamperedError
from modelseal.license.errors import StateTamperedError
from tests.guard_core.test_guard import FakeClock, _guard, _license
from tests.license.conftest import NOW


@pytest.mark.parametrize(
    "rollback_error",
    [OSError(errno.EIO, "Input/output error"), AuditTamperedError("the log changed")],
    ids=["io-error", "log-changed"],
)
def test_a_failed_take_back_does_not_hide_the_storage_refusal(
    vendor: PrivateKey,
    model: tuple[Path, ContentKey],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rollback_error: Exception,
) -> None:
    _, cek = model
    guard = _guard(
        vendor, _license(vendor, cek, max_calls=1000), tmp_path, FakeClock(NOW), reserve_calls=1
    )
    guard.check()
    calls: list[object] = []

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def broken_rollback(self: AuditLog, record: object) -> bool:
        calls.append(record)
        raise rollback_error

    monkeypatch.setattr(os, "replace", full)
    monkeypatch.setattr(AuditLog, "rollback", broken_rollback)
    with pytest.raises(NotLicensedError) as info:
        guard.check()  # reserving: a record appended, the state write refused
    assert info.value.reason == "storage_unavailable"
    assert calls  # the take-back was tried


def test_usage_refuses_an_unreadable_or_deleted_state_typed(
    vendor: PrivateKey, model: tuple[Path, ContentKey], tmp_path: Path
) -> None:
    _, cek = model
    guard = _guard(vendor, _license(vendor, cek, max_calls=1000), tmp_path, FakeClock(NOW))
    guard.check()
    state = tmp_path / "state" / f"{guard.license.license_id}.state"
    state.unlink()
    with pytest.raises(StateTamperedError) as deleted:
        guard.usage()
    assert str(deleted.value) == "the guard state file was deleted"
    state.mkdir()  # unreadable, even for root: reading it is an OSError
    with pytest.raises(NotLicensedError) as unreadable:
        guard.usage()
    assert unreadable.value.reason == "storage_unavailable"


def test_close_never_raises_when_giving_back_fails(
    vendor: PrivateKey,
    model: tuple[Path, ContentKey],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule: ``close`` (also run at exit) gives back unused reserved calls if it can; a
    full disk or a state found changed only means they stay reserved, never an error."""
    _, cek = model
    guard = _guard(vendor, _license(vendor, cek, max_calls=1000), tmp_path, FakeClock(NOW))
    guard.check()  # reserves a block

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    guard.close()
    monkeypatch.undo()
    other = _guard(vendor, _license(vendor, cek, max_calls=1000), tmp_path / "b", FakeClock(NOW))
    other.check()
    state = tmp_path / "b" / "state" / f"{other.license.license_id}.state"
    state.write_bytes(b"not a state file")
    other.close()
