"""The server's side of heartbeats: freshness, audit rollback, seats, suspension, leases.

Each test here is a review finding or a validation code the server did not
send before; they run on SQLite and on PostgreSQL (``database_url``).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from modelseal.controlplane import db
from modelseal.crypto import ContentKey
from modelseal.device import make_request
from modelseal.license import License, TrustStore, verify_license
from modelseal.license.heartbeat import (
    HeartbeatRequest,
    HeartbeatVerdict,
    authorization_header,
    device_credential,
    new_nonce,
    verify_reply,
)
from modelseal.license.licensekey import activation_salt
from modelseal.license.verify import license_kek
from tests.controlplane.conftest import Api, catalog, order, trust_of
from tests.license.conftest import make_device


@dataclass
class Device:
    lic: License
    credential: bytes
    record: str  # dev_...

    @property
    def device_id(self) -> str:
        assert self.lic.claims.device is not None
        return self.lic.claims.device.device_id


def activate(client: TestClient, key: str, trust: TrustStore, host: str = "box") -> Device:
    fp = make_device(
        {
            "os.hostname": host,
            "dmi.product_uuid": f"uuid-{host}",
            "disk.root_serial": f"disk-{host}",
            "net.mac": f"mac-{host}",
        }
    )
    req = make_request(fp, label=host, salt=activation_salt(key))
    resp = client.post("/v1/activate", json={"license_key": key, "request": req.to_json()})
    assert resp.status_code == 201, resp.text
    lic = verify_license(resp.json()["license"], trust, fingerprint=fp)
    credential = device_credential(license_kek(lic, fp), jti=lic.claims.jti)
    return Device(lic, credential, resp.json()["device"])


def beat(
    client: TestClient,
    dev: Device,
    *,
    time: int,
    nonce: str | None = None,
    head: tuple[int, str] | None = None,
    calls: int = 0,
    lease: int = 0,
) -> tuple[int, Any, str]:
    nonce = nonce or new_nonce()
    body = HeartbeatRequest(
        license_id=dev.lic.claims.jti,
        device_id=dev.device_id,
        nonce=nonce,
        time=time,
        calls_used=calls,
        audit_head=head,
        lease=lease,
    ).to_body()
    resp = client.post(
        "/v1/heartbeat",
        content=body,
        headers={
            "Authorization": authorization_header(dev.credential, body),
            "Content-Type": "application/json",
        },
    )
    return resp.status_code, resp.json(), nonce


def verdict(trust: TrustStore, dev: Device, answer: Any, nonce: str) -> HeartbeatVerdict:
    return verify_reply(
        answer["reply"], trust, license_id=dev.lic.claims.jti, device_id=dev.device_id, nonce=nonce
    )


def code(client: TestClient, trust: TrustStore, dev: Device, **kw: Any) -> str:
    status, answer, nonce = beat(client, dev, **kw)
    assert status == 200, answer
    return verdict(trust, dev, answer, nonce).code


@pytest.fixture
def setup(api: Api, content_key: ContentKey, tmp_path: Path) -> tuple[TestClient, TrustStore, str]:
    client = api.as_("a")
    ids = catalog(client, content_key, heartbeat=60)
    made = order(client, ids)
    return client, trust_of(client, tmp_path), made["license_key"]


def test_a_replayed_heartbeat_is_refused_and_changes_nothing(
    setup: tuple[TestClient, TrustStore, str],
) -> None:
    client, trust, key = setup
    dev = activate(client, key, trust)
    nonce = new_nonce()
    assert code(client, trust, dev, time=1000, nonce=nonce, calls=3) == "VALID"
    # the same request again (a capture replayed): 409, nothing signed
    status, answer, _ = beat(client, dev, time=1000, nonce=nonce, calls=3)
    assert status == 409 and answer["error"]["code"] == "stale_heartbeat"
    # an older one: 409 as well
    status, answer, _ = beat(client, dev, time=999, calls=9)
    assert status == 409
    assert client.get(f"/v1/devices/{dev.record}").json()["calls_used"] == 3
    # the same second with a fresh nonce is a second process of the device: fine
    assert code(client, trust, dev, time=1000, calls=4) == "VALID"
    assert code(client, trust, dev, time=1001, calls=5) == "VALID"


def test_concurrent_copies_of_one_heartbeat_record_once(
    setup: tuple[TestClient, TrustStore, str],
) -> None:
    client, trust, key = setup
    dev = activate(client, key, trust)
    nonce = new_nonce()
    statuses: list[int] = []

    def send() -> None:
        statuses.append(beat(client, dev, time=2000, nonce=nonce)[0])

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [200] + [409] * 7


def test_an_audit_head_that_goes_back_flags_the_device(
    setup: tuple[TestClient, TrustStore, str],
) -> None:
    client, trust, key = setup
    dev = activate(client, key, trust)
    assert code(client, trust, dev, time=10, head=(5, "h5")) == "VALID"
    # the same second, a head behind: two processes racing, not proof of anything
    assert code(client, trust, dev, time=10, head=(4, "h4")) == "VALID"
    assert code(client, trust, dev, time=11, head=(7, "h7")) == "VALID"
    # newer beat, same count but another record: the log was replaced
    assert code(client, trust, dev, time=12, head=(7, "other")) == "AUDIT_ROLLBACK"
    shown = client.get(f"/v1/devices/{dev.record}").json()
    assert shown["flag"] == "audit_rollback" and shown["flagged_at"]
    assert client.get("/v1/devices").json()[0]["flag"] == "audit_rollback"
    # sticky: a later head that looks fine does not clear it
    assert code(client, trust, dev, time=13, head=(9, "h9")) == "AUDIT_ROLLBACK"
    cleared = client.post(f"/v1/devices/{dev.record}/clear-flag")
    assert cleared.status_code == 200 and cleared.json()["flag"] is None
    assert code(client, trust, dev, time=14, head=(1, "fresh")) == "VALID"
    # fewer records than before, or none at all, is a rollback too
    assert code(client, trust, dev, time=15, head=None) == "AUDIT_ROLLBACK"


def test_a_suspended_device_hears_suspended_and_keeps_its_seat(
    setup: tuple[TestClient, TrustStore, str],
) -> None:
    client, trust, key = setup
    dev = activate(client, key, trust)
    assert client.post(f"/v1/devices/{dev.record}/suspend").json()["status"] == "suspended"
    assert code(client, trust, dev, time=1) == "SUSPENDED"
    assert client.get("/v1/licenses").json()[0]["devices"] == 1
    assert client.post(f"/v1/devices/{dev.record}/reinstate").json()["status"] == "active"
    assert code(client, trust, dev, time=2) == "VALID"
    client.post(f"/v1/devices/{dev.record}/deactivate")
    assert client.post(f"/v1/devices/{dev.record}/suspend").status_code == 409
    assert code(client, trust, dev, time=3) == "REVOKED"


def test_devices_beyond_a_lowered_limit_hear_too_many_devices(
    api: Api, setup: tuple[TestClient, TrustStore, str]
) -> None:
    client, trust, key = setup
    first, second = activate(client, key, trust, "a"), activate(client, key, trust, "b")
    plan = client.get("/v1/plans").json()[0]["id"]
    lowered = client.patch(f"/v1/plans/{plan}", json={"max_devices": 1})
    assert lowered.status_code == 200 and lowered.json()["max_devices"] == 1
    engine = db.make_engine(api.settings)
    with engine.begin() as conn:
        # seats go oldest first; the two were activated within one second
        conn.execute(
            text("UPDATE devices SET activated_at = activated_at + 5 WHERE id = :id"),
            {"id": second.record},
        )
    engine.dispose()
    assert code(client, trust, first, time=1) == "VALID"
    assert code(client, trust, second, time=1) == "TOO_MANY_DEVICES"
    client.post(f"/v1/devices/{first.record}/deactivate")
    assert code(client, trust, second, time=2) == "VALID"
    # unlimited again; a bad limit is a 4xx
    assert client.patch(f"/v1/plans/{plan}", json={"max_devices": None}).status_code == 200
    assert client.patch(f"/v1/plans/{plan}", json={"max_devices": 0}).status_code == 422
    assert client.patch(f"/v1/plans/{plan}", json={}).status_code == 422
    assert code(client, trust, first, time=3) == "REVOKED"  # it was deactivated


def test_reactivating_a_deactivated_device_keeps_lookups_working(
    setup: tuple[TestClient, TrustStore, str],
) -> None:
    """Review finding: two records with one device id made GET /devices/{device_id} a 500."""
    client, trust, key = setup
    old = activate(client, key, trust)
    client.post(f"/v1/devices/{old.record}/deactivate")
    new = activate(client, key, trust)
    assert new.record != old.record and new.device_id == old.device_id
    shown = client.get(f"/v1/devices/{new.device_id}")
    assert shown.status_code == 200 and shown.json()["id"] == new.record
    assert client.get(f"/v1/devices/{old.record}").json()["status"] == "deactivated"
    client.post(f"/v1/devices/{new.record}/deactivate")
    ambiguous = client.get(f"/v1/devices/{new.device_id}")
    assert ambiguous.status_code == 409 and old.record in ambiguous.json()["error"]["message"]


def test_a_name_shaped_like_an_id_is_refused_and_ids_win(api: Api) -> None:
    """Review finding: a customer named after another customer's id made lookups a 500."""
    client = api.as_("a")
    first = client.post("/v1/customers", json={"name": "first"}).json()
    clash = client.post("/v1/customers", json={"name": first["id"]})
    assert clash.status_code == 422 and "id" in clash.json()["error"]["message"]
    plan = client.post("/v1/plans", json={"name": "pln_" + "0" * 24, "days": 3})
    assert plan.status_code == 422
    assert client.get(f"/v1/customers/{first['id']}").json()["name"] == "first"
    assert client.get("/v1/customers/first").json()["id"] == first["id"]
    assert client.get("/v1/customers/cus_" + "f" * 24).status_code == 404


def test_framework_errors_use_the_api_error_shape(api: Api) -> None:
    """Review finding: Starlette's 404/405 answered ``{"detail": ...}``."""
    client = api.as_("a")
    missing = client.get("/v1/no-such-thing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.delete("/v1/plans")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/v1/customers", "/v1/heartbeat", "/v1/activate"])
def test_a_chunked_body_over_the_limit_is_413(api: Api, path: str) -> None:
    """Review finding: the limit read only Content-Length; a chunked body went through."""
    chunk = b" " * 65536
    sent = 0

    def body() -> Any:
        nonlocal sent
        yield b"{"
        for _ in range(40 * 16):  # 40 MiB if it were all read
            sent += 1
            yield chunk
        yield b"}"

    resp = api.as_("a").post(path, content=body(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "too_large"


def _quota_plan(client: TestClient, content_key: ContentKey, **extra: Any) -> tuple[str, str]:
    from modelseal.crypto import b64url

    plan = client.post(
        "/v1/plans",
        json={
            "name": f"metered-{secrets.token_hex(3)}",
            "days": 30,
            "max_calls": 10,
            "max_devices": 20,
            "heartbeat_interval": 60,
            "threshold": 4,
            **extra,
        },
    )
    assert plan.status_code == 201, plan.text
    cust = client.post("/v1/customers", json={"name": f"c-{secrets.token_hex(3)}"}).json()
    model = client.post(
        "/v1/models",
        json={
            "model_id": "acme/ocr",
            "key_id": content_key.key_id,
            "content_key": b64url(content_key.raw()),
        },
    )
    model_id = (
        model.json()["id"] if model.status_code == 201 else client.get("/v1/models").json()[0]["id"]
    )
    ids = {"plan": plan.json()["id"], "customer": cust["id"], "model": model_id}
    return str(order(client, ids)["license_key"]), ids["customer"]


def test_leases_never_exceed_the_quota_and_overspend_is_charged(
    api: Api, content_key: ContentKey, tmp_path: Path
) -> None:
    client = api.as_("a")
    key, customer = _quota_plan(client, content_key, offline_calls=2)
    trust = trust_of(client, tmp_path)
    a, b = activate(client, key, trust, "a"), activate(client, key, trust, "b")
    assert a.lic.claims.limits.offline_calls == 2 and a.lic.claims.limits.calls == 10

    _, answer, nonce = beat(client, a, time=1, lease=6)
    got = verdict(trust, a, answer, nonce)
    assert got.code == "VALID" and got.lease is not None
    assert (got.lease.start, got.lease.end) == (0, 6) and got.lease.exp > 0
    # b spent its offline allowance (2) before asking: charged, then 2 left of 10
    _, answer, nonce = beat(client, b, time=1, calls=2, lease=6)
    got = verdict(trust, b, answer, nonce)
    assert got.code == "VALID" and got.lease is not None
    assert (got.lease.start, got.lease.end) == (2, 4)
    _, answer, nonce = beat(client, b, time=2, calls=4, lease=6)
    got = verdict(trust, b, answer, nonce)
    assert got.code == "QUOTA_EXCEEDED" and got.lease is None
    # a beat without a lease from a device that has spent its lease hears it too
    assert code(client, trust, b, time=3, calls=4) == "QUOTA_EXCEEDED"
    # a still holds calls of its lease: VALID
    assert code(client, trust, a, time=2, calls=3) == "VALID"
    usage = client.get(f"/v1/customers/{customer}/usage").json()
    assert usage["calls_leased"] == 10 and usage["by_license"][0]["max_calls"] == 10
    assert usage["calls_used"] == 7


def test_concurrent_leases_of_one_license_stay_within_its_quota(
    api: Api, content_key: ContentKey, tmp_path: Path
) -> None:
    client = api.as_("a")
    key, _ = _quota_plan(client, content_key)
    trust = trust_of(client, tmp_path)
    devices = [activate(client, key, trust, f"host{i}") for i in range(6)]
    granted: list[int] = []
    lock = threading.Lock()

    def ask(dev: Device) -> None:
        status, answer, nonce = beat(client, dev, time=5, lease=3)
        assert status == 200, answer
        got = verdict(trust, dev, answer, nonce)
        with lock:
            granted.append(got.lease.end - got.lease.start if got.lease else 0)

    threads = [threading.Thread(target=ask, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(granted) == 10 and len(granted) == 6


def test_the_fast_path_and_the_route_answer_alike(
    api: Api, setup: tuple[TestClient, TrustStore, str]
) -> None:
    """``HeartbeatFastPath`` serves heartbeats before the router; the route must agree."""
    from modelseal.controlplane.app import create_app

    client, trust, key = setup
    dev = activate(client, key, trust)
    settings = api.settings.model_copy(update={"heartbeat_fast_path": False})
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1") as routed:
        for via, t in ((client, 10), (routed, 11)):
            assert code(via, trust, dev, time=t) == "VALID"
            status, answer, _ = beat(via, dev, time=t)  # same time: new nonce, fine
            assert status == 200, answer
            status, answer, _ = beat(via, dev, time=t - 5)
            assert status == 409 and answer["error"]["code"] == "stale_heartbeat"
            bad = via.post("/v1/heartbeat", content=b"{}", headers={"Authorization": "x"})
            assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
            big = via.post("/v1/heartbeat", content=(b" " * 8192 for _ in range(4)))
            assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    app.state.cp.engine.dispose()
