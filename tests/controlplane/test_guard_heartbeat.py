"""The Guard's side of heartbeats (#8 item 16, #9): only verified, fresh replies count."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from modelseal.crypto import ContentKey, PrivateKey, generate_private_key
from modelseal.device import StaticSource, make_request
from modelseal.guard import Guard, NotLicensedError
from modelseal.guard.core import HeartbeatReply, HeartbeatReport
from modelseal.guard.heartbeat import next_delay
from modelseal.license import TrustStore, issue_license, read_unverified
from modelseal.license.heartbeat import HeartbeatReplyError, HeartbeatVerdict, sign_reply
from tests.license.conftest import NOW, make_device


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Server:
    """A stand-in license server: answers with whatever key and code a test chooses."""

    key: PrivateKey
    clock: Clock
    code: str = "VALID"
    nonce: str | None = None  # None: echo the request's
    renewed: str | None = None
    reports: list[HeartbeatReport] = field(default_factory=list)
    raw: str | None = None  # answer this exact token instead

    def send(self, report: HeartbeatReport) -> HeartbeatReply:
        self.reports.append(report)
        if self.raw is not None:
            return HeartbeatReply(token=self.raw)
        verdict = HeartbeatVerdict(
            code=self.code,
            server_time=int(self.clock().timestamp()),
            license_id=report.license_id,
            device_id=report.device_id or "",
            nonce=self.nonce or report.nonce,
            license_token=self.renewed,
        )
        return HeartbeatReply(token=sign_reply(verdict, self.key, issuer="acme"))


@pytest.fixture(scope="module")
def vendor() -> PrivateKey:
    return generate_private_key("ed25519")


def _issue(vendor: PrivateKey, cek: ContentKey, **kw: object) -> str:
    args: dict[str, object] = dict(
        signing_key=vendor,
        issuer="acme",
        customer="c",
        audience=["acme/ocr"],
        request=make_request(make_device(), label="box"),
        content_keys=[(cek, "acme/ocr")],
        now=NOW,
        valid_for=timedelta(days=30),
        grace=timedelta(hours=1),
        heartbeat_url="http://127.0.0.1:9/v1/heartbeat",
        heartbeat_interval=60,
        threshold=6,
        license_id="lic_0123456789abcdef",
    )
    args.update(kw)
    return issue_license(**args).token  # type: ignore[arg-type]


def _guard(
    token: str | Path,
    vendor: PrivateKey,
    tmp_path: Path,
    clock: Clock,
    server: Server,
    **kw: object,
) -> Guard:
    fp = make_device()
    return Guard(
        token,
        TrustStore([vendor.public_key()]),
        state_dir=tmp_path / "state",
        audience="acme/ocr",
        source=StaticSource(list(fp.components), fp.environment),
        clock=clock,
        heartbeat=server,
        recheck_every=timedelta(0),
        **kw,
    )  # type: ignore[arg-type]


def test_an_unsigned_or_forged_reply_buys_no_grace(vendor: PrivateKey, tmp_path: Path) -> None:
    """The review's attack: a stub answering "ok" kept a 1-hour grace going for 30 days."""
    clock = Clock(NOW)
    token = _issue(vendor, ContentKey.generate())
    forger = Server(generate_private_key("ed25519"), clock)  # not in the trust store
    guard = _guard(token, vendor, tmp_path, clock, forger)
    for hours in (0.5, 0.9):
        clock.now = NOW + timedelta(hours=hours)
        with pytest.raises(HeartbeatReplyError):
            guard.heartbeat_now()
    forger.raw = "ok"  # not even a JWS
    with pytest.raises(HeartbeatReplyError):
        guard.heartbeat_now()
    clock.now = NOW + timedelta(hours=1, minutes=5)
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "offline_grace_exceeded"


def test_a_replayed_reply_is_refused(vendor: PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    guard = _guard(_issue(vendor, ContentKey.generate()), vendor, tmp_path, clock, server)
    guard.heartbeat_now()
    recorded = server.send(server.reports[-1])  # a genuine reply to an earlier beat
    server.raw = recorded.token
    with pytest.raises(HeartbeatReplyError, match="nonce"):
        guard.heartbeat_now()
    # and the reports carry a credential but never show it
    assert server.reports[-1].credential is not None
    assert "credential" not in repr(server.reports[-1])


def test_a_guard_whose_grace_ran_out_recovers_with_one_verified_reply(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    token = _issue(vendor, ContentKey.generate())
    _guard(token, vendor, tmp_path, clock, server).check()
    clock.now = NOW + timedelta(hours=3)
    with pytest.raises(NotLicensedError) as info:
        _guard(token, vendor, tmp_path, clock, server)  # refused at start
    assert info.value.reason == "offline_grace_exceeded"
    guard = _guard(token, vendor, tmp_path, clock, server, verify=False)
    with pytest.raises(NotLicensedError):
        guard.verify()
    verdict = guard.heartbeat_now()  # still allowed to report
    assert verdict.ok
    guard.check()  # and licensed again, without a restart


def test_suspended_locks_at_once_and_lifts_with_the_next_valid_reply(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock, code="SUSPENDED")
    guard = _guard(_issue(vendor, ContentKey.generate()), vendor, tmp_path, clock, server)
    guard.check()
    guard.heartbeat_now()
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "suspended"
    server.code = "VALID"
    guard.heartbeat_now()
    guard.check()
    server.code = "REVOKED"
    guard.heartbeat_now()
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "revoked"
    server.code = "VALID"  # revocation is for good, on this device
    guard.heartbeat_now()
    with pytest.raises(NotLicensedError):
        guard.check()


def test_the_server_clock_catches_a_device_clock_set_back(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    device_clock, server_clock = Clock(NOW), Clock(NOW + timedelta(days=20))
    server = Server(vendor, server_clock)
    guard = _guard(_issue(vendor, ContentKey.generate()), vendor, tmp_path, device_clock, server)
    guard.heartbeat_now()
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "clock_rollback"


def test_a_renewed_license_is_swapped_in_without_a_restart(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    cek = ContentKey.generate()
    token = _issue(vendor, cek)
    path = tmp_path / "license.jwt"
    path.write_text(token + "\n")
    server = Server(vendor, clock)
    guard = _guard(path, vendor, tmp_path, clock, server)
    # the server re-signs the same claims with a later exp (what renewal does)
    from modelseal.license import jws
    from modelseal.license.claims import LICENSE_TYP

    claims = read_unverified(token)[1]
    claims["exp"] += 30 * 86400
    server.renewed = jws.encode(
        claims, vendor, alg="EdDSA", headers={"typ": LICENSE_TYP, "kid": vendor.key_id}
    )
    guard.heartbeat_now()
    assert guard.license.claims.exp == claims["exp"]
    assert path.read_text().strip() == server.renewed
    clock.now = NOW + timedelta(days=45)
    server.renewed = None
    guard.heartbeat_now()
    guard.check()  # past the old exp, within the new one


def test_a_renewal_for_another_device_is_ignored(vendor: PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOW)
    cek = ContentKey.generate()
    server = Server(vendor, clock)
    guard = _guard(_issue(vendor, cek), vendor, tmp_path, clock, server)
    other = make_device({"dmi.product_uuid": "x", "disk.root_serial": "y", "net.mac": "z"})
    server.renewed = _issue(vendor, cek, request=make_request(other, label="o"))
    before = guard.license.token
    guard.heartbeat_now()
    assert guard.license.token == before


def test_backoff_and_jitter() -> None:
    assert next_delay(60, 0, lambda: 0.5) == 60
    assert 54 <= next_delay(60, 0, lambda: 0.0) <= 66
    assert next_delay(60, 1, lambda: 0.5) == 5
    assert next_delay(60, 3, lambda: 0.5) == 20
    assert next_delay(60, 10, lambda: 0.5) == 60


def test_the_asyncio_task_beats_off_the_event_loop() -> None:
    import asyncio
    import threading

    from modelseal.guard.heartbeat import heartbeat_task

    threads: list[str] = []

    class FakeGuard:
        def heartbeat_now(self) -> HeartbeatVerdict:
            threads.append(threading.current_thread().name)
            if len(threads) == 2:
                raise HeartbeatReplyError("a forged reply")  # counted, not fatal
            return HeartbeatVerdict(
                code="VALID", server_time=0, license_id="l", device_id="d", nonce="n"
            )

    async def run() -> None:
        task = asyncio.create_task(heartbeat_task(FakeGuard(), 0.05))  # type: ignore[arg-type]
        await asyncio.sleep(0.6)
        task.cancel()

    asyncio.run(run())
    assert len(threads) >= 3
    assert threading.main_thread().name not in threads


def test_a_guard_ships_no_records_to_a_server_that_never_acked(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    """A server from before shipping would refuse ``audit_records`` (unknown member): the
    Guard sends them only after a verified reply carried ``ack``."""
    clock = Clock(NOW)
    server = Server(vendor, clock)  # its replies carry no ack
    guard = _guard(_issue(vendor, ContentKey.generate()), vendor, tmp_path, clock, server)
    guard.check()
    for feature in ("a", "b"):
        with pytest.raises(NotLicensedError):
            guard.check(feature)
        clock.now += timedelta(seconds=2)
        guard.heartbeat_now()
    assert all(report.audit_records == () for report in server.reports)
    assert all(report.audit_head is not None for report in server.reports)
