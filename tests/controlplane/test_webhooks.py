"""Webhooks: Standard Webhooks signatures (checked by the ``standardwebhooks`` package), a
durable outbox written with the change, retries, and a receiver killed with -9 mid-run that
gets every event once it is back, in order per license (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from modelseal.controlplane.services import webhooks
from modelseal.crypto import ContentKey
from tests.controlplane.conftest import Api, Server, catalog, free_port, order

RECEIVER = Path(__file__).with_name("webhook_receiver.py")


def test_signatures_verify_with_standardwebhooks() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"type":"license.created","data":{"x":1}}'
    ts = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": webhooks.sign(secret, "msg_1", ts, body),
    }
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"1", b"2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers | {"webhook-id": "msg_2"})


def test_endpoints_validate_and_the_outbox_follows_the_transaction(api: Api) -> None:
    a = api.as_("a")
    bad = a.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "events": ["nope"]})
    assert bad.status_code == 422
    creds = a.post("/v1/webhooks", json={"url": "http://u:p@127.0.0.1:9/h", "events": ["x"]})
    assert creds.status_code == 422
    made = a.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["license.created", "license.revoked"]},
    )
    assert made.status_code == 201, made.text
    hook = made.json()
    assert hook["secret"].startswith("whsec_")
    assert "secret" not in a.get(f"/v1/webhooks/{hook['id']}").json()
    ids = catalog(a, ContentKey.generate())
    lic = order(a, ids)
    assert a.post(f"/v1/licenses/{lic['id']}/revoke").status_code == 200
    # rolled back (a revoked license stays revoked): no event for it
    assert a.post(f"/v1/licenses/{lic['id']}/reinstate").status_code == 409
    # suspended is not subscribed: no message
    lic2 = order(a, ids)
    assert a.post(f"/v1/licenses/{lic2['id']}/suspend").status_code == 200
    msgs = a.get(f"/v1/webhooks/{hook['id']}/messages").json()
    got = sorted((m["event"], m["license_id"]) for m in msgs)
    assert got == sorted(
        [
            ("license.created", lic["id"]),
            ("license.revoked", lic["id"]),
            ("license.created", lic2["id"]),
        ]
    )
    revoked = next(m for m in msgs if m["event"] == "license.revoked")
    assert revoked["payload"]["type"] == "license.revoked"
    assert revoked["payload"]["data"]["after"] == {"status": "revoked"}
    assert "address" not in revoked["payload"]["data"]
    # vendor B sees none of it
    assert api.as_("b").get(f"/v1/webhooks/{hook['id']}").status_code == 404
    a = api.as_("a")
    assert a.post(f"/v1/webhooks/{hook['id']}/disable").status_code == 200
    order(a, ids)
    assert len(a.get(f"/v1/webhooks/{hook['id']}/messages").json()) == 3


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSEAL_WEBHOOK_POLL", "0.2")
    monkeypatch.setenv("MODELSEAL_WEBHOOK_RETRY_BASE", "0.2")
    monkeypatch.setenv("MODELSEAL_WEBHOOK_RETRY_CAP", "1")


class Receiver:
    def __init__(self, port: int, secret: str, out: Path) -> None:
        self.port, self.secret, self.out = port, secret, out
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(RECEIVER), str(self.port), self.secret, str(self.out)],
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError("the receiver did not start")

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def lines(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(x) for x in self.out.read_text().splitlines() if x.strip()]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(free_port(), "", tmp_path / "received.jsonl")
    yield r
    if r.proc is not None and r.proc.poll() is None:
        r.kill()


def _wait(what: str, cond: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_receiver_killed_mid_run_gets_every_event_in_order_per_license(
    fast_retries: None, server: Server, receiver: Receiver
) -> None:
    c = server.client()
    hook = c.post(
        "/v1/webhooks",
        json={"url": f"http://127.0.0.1:{receiver.port}/hooks", "events": list(webhooks.EVENTS)},
    ).json()
    receiver.secret = hook["secret"]
    receiver.start()
    ids = catalog(c, ContentKey.generate())
    licenses = [order(c, ids)["id"] for _ in range(3)]

    def churn(rounds: int) -> None:
        for _ in range(rounds):
            for lic in licenses:
                assert c.post(f"/v1/licenses/{lic}/suspend").status_code == 200
                assert c.post(f"/v1/licenses/{lic}/reinstate").status_code == 200
                assert c.post(f"/v1/licenses/{lic}/renew", json={"days": 1}).status_code == 200

    churn(2)
    _wait("a first delivery", lambda: len(receiver.lines()) >= 3)
    receiver.kill()  # mid-run: some messages delivered, others queued or in flight
    churn(3)  # while it is down: these fail and are retried with back-off
    time.sleep(2)
    msgs = c.get(f"/v1/webhooks/{hook['id']}/messages", params={"limit": 1000}).json()
    assert any(m["status"] == "pending" and m["attempts"] >= 1 for m in msgs), msgs[:3]
    receiver.start()
    total = 3 + 3 * 3 * 5  # created + (suspend, reinstate, renew) x licenses x rounds

    def all_delivered() -> bool:
        rows = c.get(f"/v1/webhooks/{hook['id']}/messages", params={"limit": 1000}).json()
        return len(rows) == total and all(m["status"] == "delivered" for m in rows)

    _wait("every message delivered", all_delivered)
    msgs = c.get(f"/v1/webhooks/{hook['id']}/messages", params={"limit": 1000}).json()
    msgs.reverse()  # oldest first: the outbox's order
    lines = receiver.lines()
    assert not [x for x in lines if "bad" in x], "a signature did not verify"
    first_seen: dict[str, int] = {}
    for n, line in enumerate(lines):
        first_seen.setdefault(line["id"], n)
    # every event arrived (duplicates possible: at least once; receivers dedupe on the id)
    assert set(first_seen) == {m["msg_id"] for m in msgs}
    # in order per license: the first arrival of each follows the outbox order
    for lic in licenses:
        outbox = [m["msg_id"] for m in msgs if m["license_id"] == lic]
        arrived = sorted(outbox, key=lambda i: first_seen[i])
        assert arrived == outbox, lic
        events = [m["event"] for m in msgs if m["license_id"] == lic]
        assert events[0] == "license.created" and len(events) == 16
    # the delivery log shows the failures while the receiver was down
    retried = [m for m in msgs if m["attempts"] > 1]
    assert retried
    log = c.get(f"/v1/webhooks/{hook['id']}/messages/{retried[0]['msg_id']}/attempts").json()
    assert log[0]["status_code"] is None and log[0]["error"]
    assert log[-1]["status_code"] == 200
    # manual redelivery sends the same message (same webhook-id) again
    again = msgs[0]["msg_id"]
    assert c.post(f"/v1/webhooks/{hook['id']}/messages/{again}/redeliver").status_code == 200
    _wait("the redelivery", lambda: sum(x["id"] == again for x in receiver.lines()) >= 2)
    c.close()


@pytest.fixture
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test scans by hand: the app's own worker must not scan first."""
    monkeypatch.setenv("MODELSEAL_WEBHOOK_WORKER", "0")


def test_scheduled_events_fire_once_per_occasion(no_worker: None, api: Api) -> None:
    from sqlalchemy import text

    from modelseal.controlplane.services import webhook_events

    a = api.as_("a")
    hook = a.post(
        "/v1/webhooks",
        json={
            "url": "http://127.0.0.1:9/hook",
            "events": ["license.expiring", "heartbeat.missed", "usage.quota_near"],
        },
    ).json()
    ids = catalog(a, ContentKey.generate(), heartbeat=600)
    plan = a.post(
        "/v1/plans",
        json={"name": "short", "kind": "trial", "days": 3, "max_calls": 100,
              "heartbeat_interval": 600},
    ).json()  # fmt: skip
    soon = a.post(
        "/v1/orders",
        json={"customer": ids["customer"], "plan": plan["id"], "models": [ids["model"]]},
    ).json()
    later = order(a, ids)  # 30 days: not expiring within 7
    from tests.controlplane.conftest import fake_request

    key = soon["license_key"]
    dev = a.post(
        "/v1/activate", json={"license_key": key, "request": fake_request(key, seed=1).to_json()}
    ).json()
    state = api.client.app.state.cp

    def scan(now: int | None = None) -> int:
        with state.sessions() as s, s.begin():
            return webhook_events.scan(s, now=now)

    def events() -> list[tuple[str, str]]:
        msgs = a.get(f"/v1/webhooks/{hook['id']}/messages", params={"limit": 1000}).json()
        return sorted((m["event"], m["license_id"]) for m in msgs)

    assert scan() == 1  # only the expiring license: the device was just seen
    assert events() == [("license.expiring", soon["id"])]
    assert scan() == 0  # once per occasion
    # 31 minutes of silence (3 intervals of 10 minutes): heartbeat.missed, once
    assert scan(now=int(time.time()) + 31 * 60) == 1
    assert scan(now=int(time.time()) + 40 * 60) == 0
    # 95 of 100 calls reported: usage.quota_near
    with state.engine.begin() as conn:
        conn.execute(text("UPDATE devices SET calls_used = 95 WHERE id = :d"), {"d": dev["device"]})
    assert scan() == 1
    assert events() == sorted(
        [
            ("license.expiring", soon["id"]),
            ("heartbeat.missed", soon["id"]),
            ("usage.quota_near", soon["id"]),
        ]
    )
    # a renewal is a new occasion for license.expiring, once it is near again
    assert a.post(f"/v1/licenses/{soon['id']}/renew", json={"days": 2}).status_code == 200
    assert scan() == 1
    assert later["id"] not in json.dumps(events())
