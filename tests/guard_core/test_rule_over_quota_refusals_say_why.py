"""An over-quota refusal's audit record says which quota ran out.

Rule: every over-quota refusal is reason ``over_quota`` (what callers and
exit codes depend on), and its audit record's ``detail`` tells the operator
which of the three situations it is (docs/controlplane.md, "Leases
(server-side quotas)"): the license's own ``limits.calls`` used up
(counted on the device, or reached with leases), the license server's ledger
full (a ``QUOTA_EXCEEDED`` reply), or no lease left with the offline
allowance spent (waiting for the next beat). Only the last one heals by
itself, so a fleet's refusals are read by it.

Found by mutation testing (tests/MUTATION.md, guard/core.py ``_quota_error``:
all 13 of its mutants survived, each choosing another of the messages).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelseal.crypto import ContentKey, PrivateKey, generate_private_key
from modelseal.guard import Guard, NotLicensedError
from modelseal.guard.audit import iter_records
from tests.controlplane.test_guard_heartbeat import Clock, _guard, _issue
from tests.controlplane.test_guard_leases import LeasingServer
from tests.license.conftest import NOW

WAITING = "no leased calls left and the offline allowance is spent: waiting for the license server"
BLOCKED = "the license server reports the license's calls used up"


@pytest.fixture(scope="module")
def vendor() -> PrivateKey:
    return generate_private_key("ed25519")


def _refused_after(guard: Guard, calls: int) -> dict[str, Any]:
    """Spend ``calls``, then the refusal's reason and its audit record's data."""
    for _ in range(calls):
        guard.check()
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "over_quota"
    refused = [r for r in iter_records(guard.audit_path) if r["event"] == "refused"]
    assert refused[-1]["reason"] == "over_quota"
    data: dict[str, Any] = refused[-1]["data"]
    return data


def test_a_license_counted_on_the_device_says_its_calls_are_used(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = LeasingServer(vendor, clock)
    token = _issue(vendor, ContentKey.generate(), max_calls=3)
    guard = _guard(token, vendor, tmp_path, clock, server, reserve_calls=1)
    assert _refused_after(guard, 3) == {"detail": "all 3 licensed calls are used"}


def test_a_leased_license_at_its_own_limit_says_its_calls_are_used(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    """Exactly at ``limits.calls``, leases or not: the license itself is used up."""
    clock = Clock(NOW)
    server = LeasingServer(vendor, clock, size=10)
    token = _issue(vendor, ContentKey.generate(), max_calls=4, offline_calls=2)
    guard = _guard(token, vendor, tmp_path, clock, server, reserve_calls=1, lease_calls=10)
    guard.heartbeat_now()  # a lease of 10, capped by the license's 4
    assert _refused_after(guard, 4) == {"detail": "all 4 licensed calls are used"}


def test_a_full_ledger_says_the_server_reports_the_calls_used_up(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = LeasingServer(vendor, clock, size=10, quota=0)
    token = _issue(vendor, ContentKey.generate(), max_calls=100, offline_calls=2)
    guard = _guard(token, vendor, tmp_path, clock, server, reserve_calls=1, lease_calls=10)
    assert guard.heartbeat_now().code == "QUOTA_EXCEEDED"
    assert _refused_after(guard, 0) == {"detail": BLOCKED}


def test_a_spent_allowance_without_a_lease_says_it_waits_for_the_server(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = LeasingServer(vendor, clock, size=10)
    token = _issue(vendor, ContentKey.generate(), max_calls=100, offline_calls=2)
    guard = _guard(token, vendor, tmp_path, clock, server, reserve_calls=1, lease_calls=10)
    assert _refused_after(guard, 2) == {"detail": WAITING}
