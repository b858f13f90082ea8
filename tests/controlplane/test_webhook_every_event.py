"""Every event an endpoint can subscribe to reaches its outbox (#12 "Deliver" 4, audited).

``test_webhooks.py`` follows some events through delivery; this one makes each
of ``EVENTS`` happen once, through the API or a scan, and checks that a
message for it, about the right license, was queued. The audit hook feeds
the outbox, so an event renamed on one side and not the other fails here.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from modelseal.controlplane.services import webhook_events
from modelseal.controlplane.services.webhooks import EVENTS
from modelseal.crypto import ContentKey
from tests.controlplane.conftest import Api, catalog, fake_request
from tests.controlplane.test_people import make_person


@pytest.fixture
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scans by hand: the app's own worker must not scan (or deliver) first."""
    monkeypatch.setenv("MODELSEAL_WEBHOOK_WORKER", "0")


def test_every_subscribable_event_is_queued(
    allow_private_webhooks: None, no_worker: None, api: Api
) -> None:
    a = api.as_("a")
    hook = a.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "events": list(EVENTS)})
    assert hook.status_code == 201, hook.text
    ids = catalog(a, ContentKey.generate(), heartbeat=600)
    plan = a.post(
        "/v1/plans",
        json={"name": "metered", "days": 3, "max_calls": 100, "heartbeat_interval": 600,
              "threshold": 4},
    ).json()  # fmt: skip
    made = a.post(
        "/v1/orders",
        json={"customer": ids["customer"], "plan": plan["id"], "models": [ids["model"]]},
    ).json()
    lic, key = made["id"], made["license_key"]
    act = a.post(
        "/v1/activate", json={"license_key": key, "request": fake_request(key, seed=3).to_json()}
    )
    assert act.status_code == 201, act.text
    dev = act.json()["device"]
    jo = make_person(api, "jo", "owner")
    unlock = jo.post(
        f"/v1/devices/{dev}/unlock-code",
        json={"license": lic, "reason": "audit of the webhook events", "totp": jo.code(1)},
    )
    assert unlock.status_code == 201, unlock.text
    state = api.client.app.state.cp  # type: ignore[attr-defined]
    with state.engine.begin() as conn:
        conn.execute(text("UPDATE devices SET calls_used = 95 WHERE id = :d"), {"d": dev})
    with state.sessions() as s, s.begin():
        # 31 minutes on: the license expires within 7 days, the device is silent, 95 % used
        assert webhook_events.scan(s, now=int(time.time()) + 31 * 60) == 3
    a = api.as_("a")
    for path, body in (
        (f"/v1/licenses/{lic}/renew", {"days": 2}),
        (f"/v1/licenses/{lic}/suspend", None),
        (f"/v1/licenses/{lic}/reinstate", None),
        (f"/v1/devices/{dev}/deactivate", None),
        (f"/v1/licenses/{lic}/revoke", None),
    ):
        resp = a.post(path, json=body) if body is not None else a.post(path)
        assert resp.status_code == 200, (path, resp.text)
    msgs = a.get(f"/v1/webhooks/{hook.json()['id']}/messages", params={"limit": 1000}).json()
    assert sorted({m["event"] for m in msgs}) == sorted(EVENTS)
    assert {m["license_id"] for m in msgs} == {lic}
    assert all(m["payload"]["type"] == m["event"] for m in msgs)


def test_quota_near_counts_the_lease_ledger(
    allow_private_webhooks: None, no_worker: None, api: Api
) -> None:
    """With leases the ledger (calls leased) runs out before devices report spending:
    ``usage.quota_near`` must see it (it looked at reported calls only)."""
    a = api.as_("a")
    hook = a.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "events": ["usage.quota_near"]}
    )
    ids = catalog(a, ContentKey.generate(), heartbeat=600)
    plan = a.post(
        "/v1/plans",
        json={"name": "leased", "days": 30, "max_calls": 100, "offline_calls": 5,
              "heartbeat_interval": 600},
    ).json()  # fmt: skip
    made = a.post(
        "/v1/orders",
        json={"customer": ids["customer"], "plan": plan["id"], "models": [ids["model"]]},
    ).json()
    key = made["license_key"]
    act = a.post(
        "/v1/activate", json={"license_key": key, "request": fake_request(key, seed=4).to_json()}
    )
    assert act.status_code == 201, act.text
    state = api.client.app.state.cp  # type: ignore[attr-defined]

    def scan() -> int:
        with state.sessions() as s, s.begin():
            return webhook_events.scan(s)

    with state.engine.begin() as conn:
        conn.execute(text("UPDATE devices SET calls_used = 10"))
        conn.execute(text("UPDATE licenses SET calls_leased = 80 WHERE id = :l"), {"l": made["id"]})
    assert scan() == 0  # 80 % leased: not yet
    with state.engine.begin() as conn:
        conn.execute(text("UPDATE licenses SET calls_leased = 95 WHERE id = :l"), {"l": made["id"]})
    assert scan() == 1
    msgs = a.get(f"/v1/webhooks/{hook.json()['id']}/messages").json()
    data = msgs[0]["payload"]["data"]
    assert (data["calls_used"], data["calls_leased"], data["quota"]) == (10, 95, 100)
