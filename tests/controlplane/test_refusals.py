"""Device audit records shipped by heartbeats, and the refusals report built from them.

A real Guard (its own audit log, its own state) beats against the app in
process, on SQLite and on PostgreSQL (``database_url``); the report's figures
are checked against the rows the server stored and against what the Guard
refused.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from modelseal.crypto import ContentKey
from modelseal.device import StaticSource, make_request
from modelseal.guard import Guard, NotLicensedError
from modelseal.guard.audit import AuditLog, iter_records
from modelseal.guard.core import HeartbeatReply, HeartbeatReport
from modelseal.guard.heartbeat import request_body
from modelseal.guard.shipping import shipped_form
from modelseal.license import TrustStore
from modelseal.license.heartbeat import (
    MAX_SHIPPED_BYTES,
    MAX_SHIPPED_RECORDS,
    HeartbeatRequest,
    authorization_header,
    device_credential,
    new_nonce,
    verify_reply,
)
from modelseal.license.licensekey import activation_salt
from modelseal.license.verify import license_kek, verify_license
from tests.controlplane.conftest import Api, Server, catalog, order, run_cli, trust_of
from tests.license.conftest import make_device


@dataclass
class ClientBeats:
    """The Guard's HTTP heartbeat client, over the in-process app instead of a socket."""

    client: TestClient
    sent: list[tuple[HeartbeatReport, bytes]] = field(default_factory=list)

    def send(self, report: HeartbeatReport) -> HeartbeatReply:
        assert report.credential is not None and report.device_id is not None
        body = request_body(report)
        self.sent.append((report, body))
        resp = self.client.post(
            "/v1/heartbeat",
            content=body,
            headers={
                "Authorization": authorization_header(report.credential, body),
                "Content-Type": "application/json",
            },
        )
        assert resp.status_code == 200, resp.text
        return HeartbeatReply(token=resp.json()["reply"])


@dataclass
class Fleet:
    client: TestClient
    trust: TrustStore
    key: str
    beats: ClientBeats
    tmp: Path

    def guard(self, host: str = "box") -> Guard:
        fp = make_device(
            {
                "os.hostname": host,
                "dmi.product_uuid": f"uuid-{host}",
                "disk.root_serial": f"disk-{host}",
                "net.mac": f"mac-{host}",
            }
        )
        req = make_request(fp, label=host, salt=activation_salt(self.key))
        resp = self.client.post(
            "/v1/activate", json={"license_key": self.key, "request": req.to_json()}
        )
        assert resp.status_code == 201, resp.text
        return Guard(
            resp.json()["license"],
            self.trust,
            state_dir=self.tmp / f"state-{host}",
            audience="acme/ocr",
            source=StaticSource(list(fp.components), fp.environment),
            heartbeat=self.beats,
        )


@pytest.fixture
def fleet(api: Api, content_key: ContentKey, tmp_path: Path) -> Fleet:
    client = api.as_("a")
    ids = catalog(client, content_key, heartbeat=60)
    made = order(client, ids)
    return Fleet(
        client, trust_of(client, tmp_path), made["license_key"], ClientBeats(client), tmp_path
    )


def refuse(guard: Guard, features: list[str]) -> None:
    for feature in features:
        with pytest.raises(NotLicensedError) as info:
            guard.check(feature)
        assert info.value.reason == "feature_missing"


def stored(api: Api) -> list[tuple[Any, ...]]:
    engine = api.client.app.state.cp.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT vendor_id, license_id, device_id, seq, event, reason, hash"
                    " FROM device_events ORDER BY device_id, seq"
                )
            )
        )


def report(client: TestClient, **query: str) -> list[dict[str, Any]]:
    resp = client.get("/v1/reports/refusals", params={"format": "json", **query})
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, Any]] = resp.json()
    return rows


def test_a_guard_ships_its_refusals_once_and_the_report_counts_them(api: Api, fleet: Fleet) -> None:
    guard = fleet.guard()
    guard.check()
    # a server that takes records says so (ack) before the Guard sends any
    assert guard.heartbeat_now().audit_ack == -1
    assert fleet.beats.sent[-1][0].audit_records == ()
    refuse(guard, ["f1", "f2", "f3"])
    verdict = guard.heartbeat_now()
    shipped = fleet.beats.sent[-1][0].audit_records
    log = list(iter_records(guard.audit_path))
    # everything the state anchored at the beat, from the first record: the chain whole
    assert [r["seq"] for r in shipped] == list(range(len(shipped)))
    assert shipped == tuple(shipped_form(r) for r in log[: len(shipped)])
    assert verdict.code == "VALID" and verdict.audit_ack == shipped[-1]["seq"]
    rows = stored(api)
    assert [(r.event, r.reason) for r in rows] == [("refused", "feature_missing")] * 3
    assert {r.seq for r in rows} == {r["seq"] for r in log if r["event"] == "refused"}

    # resent from the start (a reply lost, another process): stored once
    guard._audit_ack = -1
    guard.heartbeat_now()
    assert len(fleet.beats.sent[-1][0].audit_records) > len(shipped)
    assert len(stored(api)) == 3
    # and a beat with nothing new ships only the link of the last heartbeat record
    guard.heartbeat_now()
    assert [set(r) for r in fleet.beats.sent[-1][0].audit_records] == [{"seq", "prev", "hash"}]

    second = fleet.guard("other")
    second.check()
    second.heartbeat_now()
    refuse(second, ["f9"])
    second.heartbeat_now()

    lic = guard.license.claims.jti  # type: ignore[union-attr]
    rows = report(fleet.client)
    assert len(rows) == 1
    row = rows[0]
    assert (row["reason"], row["license"], row["refusals"], row["devices"]) == (
        "feature_missing",
        lic,
        4,
        2,
    )
    assert row["first_at"] <= row["last_at"]
    db_rows = stored(api)
    assert row["refusals"] == sum(1 for r in db_rows if r.event == "refused")
    assert row["devices"] == len({r.device_id for r in db_rows})

    # CSV carries the same figures; since is on the record's own time
    csv_body = fleet.client.get("/v1/reports/refusals", params={"format": "csv"}).text
    assert csv_body.splitlines()[0] == "reason,customer,license,refusals,devices,first_at,last_at"
    assert f",{lic},4,2," in csv_body.splitlines()[1]
    assert report(fleet.client, since="2999-01-01") == []

    # the dashboard's figures, and another vendor sees none of it
    from modelseal.controlplane.services.reports import refusal_counts

    sessions = api.client.app.state.cp.sessions  # type: ignore[attr-defined]
    with sessions() as session:
        vendor = db_rows[0].vendor_id
        assert refusal_counts(session, vendor, None) == [("feature_missing", 4)]
        assert refusal_counts(session, vendor, 2**40) == []
        assert refusal_counts(session, "ven_other", None) == []
    assert report(api.as_("b")) == []


def test_a_backlog_goes_in_bounded_batches_and_nothing_is_lost(api: Api, fleet: Fleet) -> None:
    guard = fleet.guard()
    guard.check()
    guard.heartbeat_now()
    features = [f"feature-{n:03d}-" + "x" * 40 for n in range(150)]
    refuse(guard, features)
    batches = []
    for _ in range(10):
        guard.heartbeat_now()
        report_, _body = fleet.beats.sent[-1]
        batches.append(report_.audit_records)
        assert len(report_.audit_records) <= MAX_SHIPPED_RECORDS
        records_json = json.dumps(list(report_.audit_records), separators=(",", ":"))
        assert len(records_json) <= MAX_SHIPPED_BYTES + MAX_SHIPPED_RECORDS
        if len(stored(api)) == 150:
            break
    assert len(batches) >= 3  # 150 refusals cannot go in one or two batches
    seqs = [r["seq"] for batch in batches for r in batch]
    assert seqs == sorted(seqs)
    rows = stored(api)
    assert Counter(r.reason for r in rows) == {"feature_missing": 150}
    assert [row["refusals"] for row in report(fleet.client)] == [150]


# --- the server's checks on hand-made batches ----------------------------------------------


@dataclass
class RawDevice:
    client: TestClient
    trust: TrustStore
    jti: str
    device_id: str
    record: str
    credential: bytes
    time: int = 1000

    def beat(
        self, records: list[dict[str, Any]], head: tuple[int, str] | None, *, lease: int = 0
    ) -> tuple[str, int | None]:
        self.time += 1
        nonce = new_nonce()
        body = HeartbeatRequest(
            license_id=self.jti,
            device_id=self.device_id,
            nonce=nonce,
            time=self.time,
            audit_head=head,
            audit_records=tuple(records),
            lease=lease,
        ).to_body()
        resp = self.client.post(
            "/v1/heartbeat",
            content=body,
            headers={"Authorization": authorization_header(self.credential, body)},
        )
        assert resp.status_code == 200, resp.text
        verdict = verify_reply(
            resp.json()["reply"],
            self.trust,
            license_id=self.jti,
            device_id=self.device_id,
            nonce=nonce,
        )
        return verdict.code, verdict.audit_ack


def _raw(fleet: Fleet, key: str) -> RawDevice:
    fp = make_device(
        {
            "os.hostname": "raw",
            "dmi.product_uuid": "uuid-raw",
            "disk.root_serial": "disk-raw",
            "net.mac": "mac-raw",
        }
    )
    req = make_request(fp, label="raw", salt=activation_salt(key))
    resp = fleet.client.post("/v1/activate", json={"license_key": key, "request": req.to_json()})
    lic = verify_license(resp.json()["license"], fleet.trust, fingerprint=fp)
    assert lic.claims.device is not None
    return RawDevice(
        fleet.client,
        fleet.trust,
        lic.claims.jti,
        lic.claims.device.device_id,
        resp.json()["device"],
        device_credential(license_kek(lic, fp), jti=lic.claims.jti),
    )


@pytest.fixture
def raw(fleet: Fleet) -> RawDevice:
    return _raw(fleet, fleet.key)


def chain(path: Path, n: int, reason: str = "expired", *, same: int = 0) -> list[dict[str, Any]]:
    """A device log of ``n`` refusals; the first ``same`` are those of every such log."""
    log = AuditLog(path, clock=lambda: datetime(2026, 12, 1, tzinfo=UTC))
    for i in range(n):
        log.append("refused", reason="expired" if i < same else reason, data={"i": i})
    return list(iter_records(path))


def flag_of(client: TestClient, record: str) -> Any:
    return client.get(f"/v1/devices/{record}").json()["flag"]


def test_a_batch_that_does_not_continue_the_chain_flags_the_device(
    api: Api, raw: RawDevice, tmp_path: Path
) -> None:
    ours = chain(tmp_path / "a.jsonl", 6)
    theirs = chain(tmp_path / "b.jsonl", 7, reason="revoked")  # another log, same seqs
    assert raw.beat([], None) == ("VALID", -1)
    assert raw.beat(ours[:3], (2, ours[2]["hash"])) == ("VALID", 2)
    # a gap (records after 3): not a break, nothing taken, the ack says where to resume
    assert raw.beat(ours[4:], (5, ours[5]["hash"])) == ("VALID", 2)
    assert flag_of(raw.client, raw.record) is None
    assert len(stored(api)) == 3
    # records that do not link to what the server holds: a rewritten log
    code, ack = raw.beat(theirs[3:], (6, theirs[6]["hash"]))
    assert (code, ack) == ("AUDIT_ROLLBACK", 2)
    assert flag_of(raw.client, raw.record) == "audit_chain_break"
    assert [r.reason for r in stored(api)] == ["expired"] * 3
    # the vendor clears the flag: the device ships its log again from the start
    assert raw.client.post(f"/v1/devices/{raw.record}/clear-flag").status_code == 200
    assert raw.beat([], (5, ours[5]["hash"])) == ("VALID", -1)
    assert raw.beat(ours, (5, ours[5]["hash"])) == ("VALID", 5)
    assert [r.seq for r in stored(api)] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("damage", ["edited", "not_the_head", "stored_head"])
def test_an_edited_record_or_a_foreign_head_is_a_break(
    api: Api, raw: RawDevice, tmp_path: Path, damage: str
) -> None:
    ours = chain(tmp_path / "a.jsonl", 4)
    assert raw.beat([], None) == ("VALID", -1)
    if damage == "stored_head":
        # the server saw head 3 before; a batch whose record 3 is another is a rewrite,
        # even when it links up and the beat's own head (4) is further along
        fork = chain(tmp_path / "b.jsonl", 5, reason="x", same=3)
        assert fork[:3] == ours[:3] and fork[3] != ours[3]
        assert raw.beat([], (3, ours[3]["hash"])) == ("VALID", -1)
        code, _ = raw.beat(fork, (4, fork[4]["hash"]))
    elif damage == "edited":
        bad = [*ours[:2], {**ours[2], "reason": "feature_missing"}, ours[3]]
        code, _ = raw.beat(bad, (3, ours[3]["hash"]))
    else:
        code, _ = raw.beat(ours, (3, "A" * 43))
    assert code == "AUDIT_ROLLBACK"
    assert flag_of(raw.client, raw.record) == "audit_chain_break"
    assert stored(api) == []


def test_a_heartbeat_without_records_is_the_old_format_byte_for_byte() -> None:
    request = HeartbeatRequest(
        license_id="lic_1", device_id="d", nonce=new_nonce(), time=5, audit_head=(1, "h")
    )
    assert b"audit_records" not in request.to_body()
    assert HeartbeatRequest.from_body(request.to_body()) == request


def test_a_beat_that_takes_a_lease_stores_its_records_too(
    api: Api, fleet: Fleet, content_key: ContentKey, tmp_path: Path
) -> None:
    """The lease path is its own transaction (it locks the license): same records, same rules."""
    plan = fleet.client.post(
        "/v1/plans",
        json={"name": "metered", "days": 30, "max_calls": 100, "heartbeat_interval": 60},
    )
    assert plan.status_code == 201, plan.text
    ids = catalog(fleet.client, content_key, heartbeat=60)
    made = order(fleet.client, {**ids, "plan": plan.json()["id"]})
    dev = _raw(fleet, made["license_key"])
    ours = chain(tmp_path / "a.jsonl", 4)
    assert dev.beat([], None) == ("VALID", -1)
    assert dev.beat(ours[:2], (1, ours[1]["hash"]), lease=10) == ("VALID", 1)
    assert dev.beat(ours, (3, ours[3]["hash"]), lease=10) == ("VALID", 3)
    assert [r.seq for r in stored(api)] == [0, 1, 2, 3]
    forged = [*ours[:3], {**ours[3], "data": {"i": 99}}]
    assert dev.beat(forged, (3, ours[3]["hash"]), lease=10)[0] == "VALID"  # held: ignored
    assert len(stored(api)) == 4


def test_a_lease_is_audited_in_the_device_name_without_its_freshness_bookkeeping(
    fleet: Fleet, content_key: ContentKey
) -> None:
    plan = fleet.client.post(
        "/v1/plans",
        json={"name": "metered", "days": 30, "max_calls": 100, "heartbeat_interval": 60},
    )
    ids = catalog(fleet.client, content_key, heartbeat=60)
    made = order(fleet.client, {**ids, "plan": plan.json()["id"]})
    dev = _raw(fleet, made["license_key"])
    before = len(fleet.client.get("/v1/audit", params={"limit": 1000}).json())
    assert dev.beat([], None, lease=10)[0] == "VALID"
    new = fleet.client.get("/v1/audit", params={"limit": 1000}).json()[before:]
    assert {r["event"] for r in new} == {"device.updated", "license.updated"}
    for record in new:
        assert record["data"]["actor"] == {"kind": "device", "id": dev.record}
        assert not {"hb_time", "hb_nonces"} & set(record["data"]["after"])
    ledger = next(r for r in new if r["event"] == "license.updated")
    assert ledger["data"]["after"] == {"calls_leased": 10}


def test_the_cli_writes_the_refusals_report(
    server: Server, tmp_path: Path, content_key: ContentKey
) -> None:
    """``modelseal admin report refusals [--since] [--format] [--out]`` against a real server."""
    with server.client() as c:
        ids = catalog(c, content_key, heartbeat=60)
        made = order(c, ids)
        fleet = Fleet(c, trust_of(c, tmp_path), made["license_key"], ClientBeats(c), tmp_path)  # type: ignore[arg-type]
        dev = _raw(fleet, made["license_key"])
        records = chain(tmp_path / "a.jsonl", 3)  # three refusals on 2026-12-01
        assert dev.beat([], None) == ("VALID", -1)
        assert dev.beat(records, (2, records[2]["hash"])) == ("VALID", 2)
    base = ["admin", "--server", server.url, "--token-file", str(server.token_file)]
    out = tmp_path / "refusals.csv"
    run_cli(*base, "report", "refusals", "--since", "2026-11-30", "--out", str(out))
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["reason"], r["license"], r["refusals"], r["devices"]) for r in rows] == [
        ("expired", dev.jti, "3", "1")
    ]
    assert rows[0]["first_at"] == rows[0]["last_at"] == "2026-12-01T00:00:00Z"
    later = run_cli(*base, "report", "refusals", "--since", "2026-12-02", "--format", "json")
    assert json.loads(later.stdout) == []
