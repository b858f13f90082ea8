"""What a heartbeat asks for and carries, and when the Guard beats early.

Rules (docs/controlplane.md, "Leases" and "Shipped audit records"):

- A leased license asks for a new lease (``lease_calls`` calls) only when
  less than half of the one it holds is left; with half or more left it asks
  for none. A license without an offline allowance never asks.
- Once a verified reply said up to which record the server holds the
  device's audit chain (``ack``), the next beat carries the records after it,
  up to the anchored head, in shipped form; before any ``ack`` it carries none.
- Reserving calls that leave less than half a lease (or finding none left)
  wakes the heartbeat thread: the next lease is asked for off the request
  path, at once, not at the next interval.

Found by mutation testing (tests/MUTATION.md, guard/core.py): no test of the
module's selection pinned the lease a report asks for, the records it ships,
or the wake-up.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modelseal.crypto import ContentKey, PrivateKey, generate_private_key
from modelseal.device import StaticSource
from modelseal.guard import Guard, NotLicensedError
from modelseal.guard import heartbeat as heartbeat_module
from modelseal.guard.audit import iter_records
from modelseal.guard.core import HeartbeatReply, HeartbeatReport
from modelseal.guard.shipping import shipped_form
from modelseal.license import TrustStore
from modelseal.license.errors import LicenseError
from modelseal.license.heartbeat import HeartbeatReplyError, HeartbeatVerdict, Lease, sign_reply
from tests.controlplane.test_guard_heartbeat import Clock, Server, _guard, _issue
from tests.controlplane.test_guard_leases import LeasingServer
from tests.license.conftest import NOW, make_device


@pytest.fixture(scope="module")
def vendor() -> PrivateKey:
    return generate_private_key("ed25519")


def _spend(guard: Guard, n: int) -> None:
    for _ in range(n):
        guard.check()


def _reserved(guard: Guard) -> int:
    state = guard.state()
    assert state is not None
    return state.calls_reserved


# --- the lease a report asks for --------------------------------------------------


def test_a_lease_is_asked_for_only_when_less_than_half_is_left(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    """Rule: ask for ``lease_calls`` when ``lease_end - calls_reserved < lease_calls // 2``
    (and the lease taken is audited).

    11 calls a lease: half is 5 (integer halving), so 5 left asks for nothing
    and 4 left asks for 11.
    """
    clock = Clock(NOW)
    server = LeasingServer(vendor, clock, size=11)
    token = _issue(vendor, ContentKey.generate(), max_calls=1000, offline_calls=3)
    guard = _guard(token, vendor, tmp_path, clock, server, reserve_calls=1, lease_calls=11)
    guard.heartbeat_now()  # nothing leased yet: 0 left
    assert server.reports[-1].lease == 11
    assert guard.state().lease_end == 11  # type: ignore[union-attr]
    # the beat's audit record carries the lease it took: [start, end, exp]
    (beat,) = [r for r in iter_records(guard.audit_path) if r["event"] == "heartbeat"]
    assert beat["data"] == {"code": "VALID", "lease": [0, 11, int(NOW.timestamp()) + 3600]}
    _spend(guard, 6)
    assert _reserved(guard) == 6  # 5 left: exactly half (rounded down)
    guard.heartbeat_now()
    assert server.reports[-1].lease == 0
    _spend(guard, 1)  # 4 left
    guard.heartbeat_now()
    assert server.reports[-1].lease == 11
    guard.close()


def test_a_leased_license_asks_for_a_lease_on_its_first_beat(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    """Rule: a leased license with no lease yet asks for one, however few calls it made."""
    clock = Clock(NOW)
    server = LeasingServer(vendor, clock, size=1000)
    token = _issue(vendor, ContentKey.generate(), max_calls=10_000, offline_calls=3)
    guard = _guard(token, vendor, tmp_path, clock, server, lease_calls=700)
    guard.heartbeat_now()
    (report,) = server.reports
    assert report.lease == 700 and report.calls_reserved == 0
    guard.close()


def test_a_license_without_an_allowance_never_asks_for_a_lease(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    """Rule: leases are for licenses with ``limits.offline_calls``; others count locally."""
    clock = Clock(NOW)
    server = LeasingServer(vendor, clock, size=10)
    token = _issue(vendor, ContentKey.generate(), max_calls=1000)
    guard = _guard(token, vendor, tmp_path, clock, server, reserve_calls=1, lease_calls=10)
    for _ in range(3):
        guard.heartbeat_now()
        _spend(guard, 4)
    assert [r.lease for r in server.reports] == [0, 0, 0]
    guard.close()


# --- audit records a beat ships -----------------------------------------------------


@dataclass
class AckingServer(Server):
    """A stand-in server that holds the device's audit chain up to ``ack``."""

    ack: int | None = -1
    forgetful: bool = False  # keep answering ``ack`` whatever arrives

    def send(self, report: HeartbeatReport) -> HeartbeatReply:
        self.reports.append(report)
        if report.audit_records and not self.forgetful:
            self.ack = int(report.audit_records[-1]["seq"])
        verdict = HeartbeatVerdict(
            code=self.code,
            server_time=int(self.clock().timestamp()),
            license_id=report.license_id,
            device_id=report.device_id or "",
            nonce=report.nonce,
            audit_ack=self.ack,
        )
        return HeartbeatReply(token=sign_reply(verdict, self.key, issuer="acme"))


def _expected(guard: Guard, after: int, upto: int) -> tuple[dict[str, Any], ...]:
    return tuple(
        shipped_form(r) for r in iter_records(guard.audit_path) if after < r["seq"] <= upto
    )


def test_beats_ship_the_records_after_the_servers_ack_up_to_the_head(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    """Rule: after a reply's ``ack``, each beat carries the records ``ack < seq <= head``."""
    clock = Clock(NOW)
    server = AckingServer(vendor, clock)
    token = _issue(vendor, ContentKey.generate(), max_calls=100)
    guard = _guard(token, vendor, tmp_path, clock, server, reserve_calls=1)
    guard.check()
    with pytest.raises(NotLicensedError):
        guard.check("not-licensed")  # a refusal: a record the server keeps whole
    guard.heartbeat_now()  # no ack known yet: nothing shipped
    assert server.reports[0].audit_records == ()
    guard.heartbeat_now()  # the reply said -1: everything up to the head
    first = server.reports[1]
    assert first.audit_head is not None
    head = int(str(first.audit_head[0]))
    assert first.audit_records == _expected(guard, -1, head) and len(first.audit_records) >= 3
    assert any("reason" in r for r in first.audit_records)
    _spend(guard, 2)
    clock.now = NOW.replace(second=NOW.second + 2)
    guard.heartbeat_now()  # the same shipper again: only what is new since the ack
    second = server.reports[2]
    assert second.audit_head is not None
    assert second.audit_records == _expected(guard, head, int(str(second.audit_head[0])))
    assert second.audit_records and second.audit_records[0]["seq"] == head + 1
    guard.close()


def test_a_server_that_goes_back_gets_the_chain_again(vendor: PrivateKey, tmp_path: Path) -> None:
    """Rule: the cursor is the server's ``ack``: an earlier one resends from there."""
    clock = Clock(NOW)
    server = AckingServer(vendor, clock)
    guard = _guard(_issue(vendor, ContentKey.generate()), vendor, tmp_path, clock, server)
    guard.check()
    guard.heartbeat_now()
    guard.heartbeat_now()
    shipped = server.reports[1].audit_records
    assert shipped
    server.ack, server.forgetful = -1, True  # its database was restored
    guard.heartbeat_now()  # answered -1
    guard.heartbeat_now()
    head = int(str(server.reports[3].audit_head[0]))  # type: ignore[index]
    assert server.reports[3].audit_records == _expected(guard, -1, head)
    guard.close()


# --- the heartbeat thread woken when a lease runs low ------------------------------------


def _auto_guard(
    token: str,
    vendor: PrivateKey,
    tmp_path: Path,
    clock: Clock,
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    **kw: Any,
) -> Guard:
    """A Guard running its own heartbeat thread, whose HTTP client is ``server``."""
    monkeypatch.setattr(heartbeat_module, "HttpHeartbeatClient", lambda url, **_: server)
    fp = make_device()
    return Guard(
        token,
        TrustStore([vendor.public_key()]),
        state_dir=tmp_path / "state",
        audience="acme/ocr",
        source=StaticSource(list(fp.components), fp.environment),
        clock=clock,
        recheck_every=timedelta(0),
        **kw,
    )


def _allowed(guard: Guard) -> bool:
    try:
        guard.check(count=False)
    except NotLicensedError:
        return False
    return True


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_lease_running_low_wakes_the_heartbeat_thread(
    vendor: PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule: reserving past half the lease beats now (the interval is 60 s), off the request."""
    clock = Clock(NOW)
    server = LeasingServer(vendor, clock, size=11)
    token = _issue(vendor, ContentKey.generate(), max_calls=1000, offline_calls=2)
    guard = _auto_guard(
        token, vendor, tmp_path, clock, server, monkeypatch, reserve_calls=1, lease_calls=11
    )
    try:
        # the thread's first beat, at start: a lease of 11
        assert _wait_for(lambda: guard.state().lease_end == 11, 10)  # type: ignore[union-attr]
        assert len(server.reports) == 1
        _spend(guard, 6)  # 5 left: half of 11, rounded down: no wake-up
        time.sleep(1.5)  # a woken beat waits 1 s after the first: it would be here
        assert len(server.reports) == 1
        _spend(guard, 1)  # 4 left: less than half
        assert _wait_for(lambda: len(server.reports) == 2, 10)
        assert server.reports[1].lease == 11 and server.reports[1].calls_reserved == 7
    finally:
        guard.close()


@dataclass
class WithholdingServer(LeasingServer):
    """Answers VALID but grants no lease while ``granting`` is False."""

    granting: bool = False

    def send(self, report: HeartbeatReport) -> HeartbeatReply:
        if not self.granting:
            report = dataclasses.replace(report, lease=0)
        return super().send(report)


def test_running_out_of_leased_calls_wakes_the_heartbeat_thread(
    vendor: PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule: a call refused for want of a lease asks for one at once; a later call goes."""
    clock = Clock(NOW)
    server = WithholdingServer(vendor, clock, size=10)
    token = _issue(vendor, ContentKey.generate(), max_calls=1000, offline_calls=2)
    guard = _auto_guard(
        token, vendor, tmp_path, clock, server, monkeypatch, reserve_calls=2, lease_calls=10
    )
    try:
        assert _wait_for(lambda: len(server.reports) == 1, 10)  # the first beat: no lease
        guard.check()  # reserves the whole allowance (2): low, a woken beat, still no lease
        assert _wait_for(lambda: len(server.reports) == 2, 10)
        guard.check()  # the second reserved call
        server.granting = True
        with pytest.raises(NotLicensedError) as info:
            guard.check()  # nothing left: refused, and the thread woken (next beat: 60 s)
        assert info.value.reason == "over_quota"
        assert _wait_for(lambda: len(server.reports) == 3, 10)
        assert server.reports[2].lease == 10
        # the refusal holds until the woken beat's lease re-verifies the license
        assert _wait_for(lambda: _allowed(guard), 10)
        guard.check()
    finally:
        guard.close()


# --- what else a report says -------------------------------------------------------------


def test_a_report_is_dated_on_the_forward_only_clock(vendor: PrivateKey, tmp_path: Path) -> None:
    """Rule: a beat's time never goes back (the server refuses older beats as replays):
    with the device clock set back inside the tolerance, the report carries the
    high-water mark, not the device clock."""
    clock = Clock(NOW + timedelta(hours=1))
    server = Server(vendor, Clock(NOW))
    guard = _guard(_issue(vendor, ContentKey.generate()), vendor, tmp_path, clock, server)
    guard.check()
    clock.now = NOW + timedelta(minutes=57)
    guard.heartbeat_now()
    assert server.reports[-1].time == (NOW + timedelta(hours=1)).timestamp()
    clock.now = NOW + timedelta(hours=2)  # and a clock ahead of the mark is taken as it is
    guard.heartbeat_now()
    assert server.reports[-1].time == clock.now.timestamp()


def test_a_report_without_a_state_claims_no_calls_and_no_head(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    """Rule: a report says what the state file says; with the file gone, no calls and no
    head (nothing made up), and the deletion itself is refused as tampering."""
    clock = Clock(NOW)
    server = Server(vendor, clock)
    guard = _guard(
        _issue(vendor, ContentKey.generate(), max_calls=10), vendor, tmp_path, clock, server
    )
    guard.check()
    (tmp_path / "state" / f"{guard.license.license_id}.state").unlink()
    with pytest.raises(LicenseError) as info:
        guard.heartbeat_now()
    assert info.value.reason == "state_tampered"
    (report,) = server.reports
    assert report.calls_reserved == 0 and report.audit_head is None


@dataclass
class GrantingServer(Server):
    """Grants a lease on every VALID reply, asked for or not."""

    def send(self, report: HeartbeatReport) -> HeartbeatReply:
        self.reports.append(report)
        now = int(self.clock().timestamp())
        verdict = HeartbeatVerdict(
            code=self.code,
            server_time=now,
            license_id=report.license_id,
            device_id=report.device_id or "",
            nonce=report.nonce,
            lease=Lease(start=0, end=500, exp=now + 3600),
        )
        return HeartbeatReply(token=sign_reply(verdict, self.key, issuer="acme"))


def test_a_lease_for_a_license_without_an_allowance_is_ignored(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    """Rule: only a leased license (``limits.offline_calls``) takes a lease; others count
    ``limits.calls`` on the device, and the beat's record carries no lease."""
    clock = Clock(NOW)
    server = GrantingServer(vendor, clock)
    guard = _guard(
        _issue(vendor, ContentKey.generate(), max_calls=10), vendor, tmp_path, clock, server
    )
    assert guard.heartbeat_now().lease is not None
    state = guard.state()
    assert state is not None and state.lease_end == 0 and state.lease_exp is None
    (beat,) = [r for r in iter_records(guard.audit_path) if r["event"] == "heartbeat"]
    assert beat["data"] == {"code": "VALID"}


def test_a_client_without_a_signed_reply_is_audited_as_such(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    """Rule: a refused beat's record says why (the operator's only view of it)."""

    class Unsigned:
        def send(self, report: HeartbeatReport) -> Any:
            return {"code": "VALID"}

    clock = Clock(NOW)
    guard = _guard(
        _issue(vendor, ContentKey.generate()),
        vendor,
        tmp_path,
        clock,
        Unsigned(),  # type: ignore[arg-type]
    )
    with pytest.raises(HeartbeatReplyError, match="no signed reply"):
        guard.heartbeat_now()
    (refused,) = [r for r in iter_records(guard.audit_path) if r["event"] == "heartbeat_refused"]
    assert refused["data"] == {"detail": "the heartbeat client returned no signed reply"}
