"""The Guard's side of server-side quotas and of every validation code the server sends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from modelseal.crypto import ContentKey, PrivateKey, generate_private_key
from modelseal.guard import NotLicensedError
from modelseal.guard.core import HeartbeatReply, HeartbeatReport
from modelseal.license.heartbeat import HeartbeatVerdict, Lease, sign_reply
from tests.controlplane.test_guard_heartbeat import Clock, Server, _guard, _issue
from tests.license.conftest import NOW


@pytest.fixture(scope="module")
def vendor() -> PrivateKey:
    return generate_private_key("ed25519")


@dataclass
class LeasingServer(Server):
    """Grants ``size`` calls per lease while ``quota`` lasts, like the real ledger."""

    size: int = 10
    quota: int = 10**9
    leased: int = 0
    lease_end: int = 0
    ttl: int = 3600

    def send(self, report: HeartbeatReport) -> HeartbeatReply:
        self.reports.append(report)
        code, lease = self.code, None
        if report.lease and code == "VALID":
            if report.calls_reserved > self.lease_end:
                self.leased += report.calls_reserved - self.lease_end
                self.lease_end = report.calls_reserved
            grant = min(report.lease, self.size, self.quota - self.leased)
            if grant <= 0:
                code = "QUOTA_EXCEEDED"
            else:
                start = self.lease_end
                self.lease_end += grant
                self.leased += grant
                now = int(self.clock().timestamp())
                lease = Lease(start=start, end=self.lease_end, exp=now + self.ttl)
        verdict = HeartbeatVerdict(
            code=code,
            server_time=int(self.clock().timestamp()),
            license_id=report.license_id,
            device_id=report.device_id or "",
            nonce=report.nonce,
            lease=lease,
        )
        return HeartbeatReply(token=sign_reply(verdict, self.key, issuer="acme"))


def _spend(guard: object, n: int) -> int:
    """Calls that went through before the first refusal (at most n)."""
    done = 0
    for _ in range(n):
        try:
            guard.check()  # type: ignore[attr-defined]
        except NotLicensedError:
            break
        done += 1
    return done


def test_offline_a_leased_license_spends_at_most_its_allowance(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = LeasingServer(vendor, clock, size=10)
    token = _issue(vendor, ContentKey.generate(), max_calls=1000, offline_calls=5)
    guard = _guard(token, vendor, tmp_path, clock, server, reserve_calls=1, lease_calls=10)
    # no lease yet (the server unreachable): the allowance, then refusals
    assert _spend(guard, 20) == 5
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "over_quota"
    # one beat: the 5 spent are charged, a lease of 10 from there, the allowance again
    verdict = guard.heartbeat_now()
    assert verdict.lease == Lease(start=5, end=15, exp=int(NOW.timestamp()) + 3600)
    assert server.reports[-1].lease == 10 and server.reports[-1].calls_reserved == 5
    assert _spend(guard, 100) == 15
    assert server.leased == 15
    guard.close()


def test_spending_is_bounded_by_the_servers_ledger(vendor: PrivateKey, tmp_path: Path) -> None:
    """Whatever the state file says, calls beyond the quota need leases the server refuses."""
    clock = Clock(NOW)
    server = LeasingServer(vendor, clock, size=10, quota=20)
    token = _issue(vendor, ContentKey.generate(), max_calls=20, offline_calls=2)
    guard = _guard(token, vendor, tmp_path, clock, server, reserve_calls=1, lease_calls=10)
    total = 0
    for _ in range(6):
        guard.heartbeat_now()
        total += _spend(guard, 50)
    # the quota (20) plus what the allowance let through after the ledger filled
    assert server.leased <= 20 + 2 and total <= 22
    assert server.reports[-1].lease == 10
    verdict = guard.heartbeat_now()
    assert verdict.code == "QUOTA_EXCEEDED"
    # the server said the quota is gone: not even the offline allowance now
    assert _spend(guard, 5) == 0
    state = guard.state()
    assert state is not None and state.quota_blocked
    guard.close()


def test_a_lapsed_lease_is_forfeit(vendor: PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOW)
    server = LeasingServer(vendor, clock, size=50, ttl=60)
    token = _issue(vendor, ContentKey.generate(), max_calls=1000, offline_calls=3)
    guard = _guard(token, vendor, tmp_path, clock, server, reserve_calls=1, lease_calls=50)
    guard.heartbeat_now()
    assert _spend(guard, 10) == 10
    clock.now = NOW + timedelta(minutes=5)  # past the lease's exp, inside the grace
    assert _spend(guard, 50) == 3  # the allowance only
    guard.close()


def test_licenses_without_an_allowance_count_locally_as_before(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = LeasingServer(vendor, clock)
    guard = _guard(
        _issue(vendor, ContentKey.generate(), max_calls=7), vendor, tmp_path, clock, server
    )
    guard.heartbeat_now()
    assert server.reports[-1].lease == 0
    assert _spend(guard, 20) == 7
    guard.close()


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("TOO_MANY_DEVICES", "too_many_devices"),
        ("FINGERPRINT_MISMATCH", "wrong_device"),
        ("AUDIT_ROLLBACK", "state_tampered"),
        ("SUSPENDED", "suspended"),
    ],
)
def test_locking_codes_lock_at_once_and_a_valid_reply_lifts_them(
    vendor: PrivateKey, tmp_path: Path, code: str, reason: str
) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    guard = _guard(_issue(vendor, ContentKey.generate()), vendor, tmp_path, clock, server)
    guard.check()
    server.code = code
    assert guard.heartbeat_now().code == code
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == reason
    server.code = "VALID"
    guard.heartbeat_now()
    guard.check()


def test_revoked_locks_for_good(vendor: PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock, code="REVOKED")
    guard = _guard(_issue(vendor, ContentKey.generate()), vendor, tmp_path, clock, server)
    guard.heartbeat_now()
    server.code = "VALID"
    guard.heartbeat_now()
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "revoked"


@pytest.mark.parametrize(("code", "keeps_grace"), [("QUOTA_EXCEEDED", True), ("EXPIRED", False)])
def test_non_locking_codes_and_the_offline_grace(
    vendor: PrivateKey, tmp_path: Path, code: str, keeps_grace: bool
) -> None:
    """QUOTA_EXCEEDED is contact with the server (grace restarts); EXPIRED is not."""
    clock = Clock(NOW)
    server = Server(vendor, clock, code=code)
    guard = _guard(_issue(vendor, ContentKey.generate()), vendor, tmp_path, clock, server)
    guard.check()
    clock.now = NOW + timedelta(minutes=50)
    guard.heartbeat_now()
    guard.check()  # not locked by the code itself
    clock.now = NOW + timedelta(minutes=70)  # past the 1 h grace from activation
    if keeps_grace:
        guard.check()
    else:
        with pytest.raises(NotLicensedError) as info:
            guard.check()
        assert info.value.reason == "offline_grace_exceeded"


def test_beats_never_go_back_in_time(vendor: PrivateKey, tmp_path: Path) -> None:
    """The server refuses an older beat as a replay: the Guard's own must not look like one."""
    clock = Clock(NOW)
    server = Server(vendor, clock)
    guard = _guard(_issue(vendor, ContentKey.generate()), vendor, tmp_path, clock, server)
    guard.heartbeat_now()
    clock.now = NOW - timedelta(minutes=2)  # the wall clock stepped back (within tolerance)
    guard.heartbeat_now()
    times = [r.time for r in server.reports]
    assert times[1] >= times[0]
