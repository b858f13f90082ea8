"""Webhooks: Standard Webhooks signatures (checked by the ``standardwebhooks`` package), a
durable outbox written with the change, retries, and a receiver killed with -9 mid-run that
gets every event once it is back, in order per license (real processes)."""

from __future__ import annotations

import json
import os
import signal
import socket
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


def test_endpoints_validate_and_the_outbox_follows_the_transaction(
    allow_private_webhooks: None, api: Api
) -> None:
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
    allow_private_webhooks: None, fast_retries: None, server: Server, receiver: Receiver
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


def test_scheduled_events_fire_once_per_occasion(
    allow_private_webhooks: None, no_worker: None, api: Api
) -> None:
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


# --- red team #12: broken, slow and internal receivers -----------------------------------

BAD_RECEIVER = Path(__file__).with_name("bad_receiver.py")


@pytest.fixture
def bad_receiver() -> Iterator[Any]:
    """Start ``bad_receiver.py MODE`` processes; yields a function returning the port."""
    procs: list[subprocess.Popen[str]] = []

    def start(mode: str) -> int:
        proc = subprocess.Popen(
            [sys.executable, str(BAD_RECEIVER), mode],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once listening: the readiness check
        assert line.strip().isdigit(), line
        return int(line)

    yield start
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _event_for_each_vendor(api: Api) -> None:
    """A committed license.created note per vendor: what an order would leave in the outbox."""
    from sqlalchemy import select

    from modelseal.controlplane.models import Vendor
    from modelseal.controlplane.services import audit

    with api.client.app.state.cp.sessions() as s, s.begin():
        for vid in s.execute(select(Vendor.id)).scalars():
            audit.note(s, vid, "license.created", {"target": {"kind": "license", "id": "lic_x"}})


def _worker(api: Api, **kw: Any) -> webhooks.DeliveryWorker:
    st = api.client.app.state.cp
    return webhooks.DeliveryWorker(
        st.sessions, st.box, scan_every=1e9, retry_base=0.01, retry_cap=0.01,
        allow_private=True, **kw,
    )  # fmt: skip


def test_a_receiver_that_is_not_http_fails_only_its_own_deliveries(
    allow_private_webhooks: None,
    no_worker: None,
    api: Api,
    tmp_path: Path,
    bad_receiver: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding 1: an SSH banner raised BadStatusLine out of the worker's pass: no vendor's
    webhooks were delivered again and the bad message was retried forever, uncounted."""
    banner = bad_receiver("banner")
    good = Receiver(free_port(), "", tmp_path / "good.jsonl")
    evil = (
        api.as_("a")
        .post(
            "/v1/webhooks",
            json={"url": f"http://127.0.0.1:{banner}/", "events": ["license.created"]},
        )
        .json()
    )
    hook = (
        api.as_("b")
        .post(
            "/v1/webhooks",
            json={"url": f"http://127.0.0.1:{good.port}/h", "events": ["license.created"]},
        )
        .json()
    )
    good.secret = hook["secret"]
    good.start()
    try:
        _event_for_each_vendor(api)
        monkeypatch.setattr(webhooks, "MAX_ATTEMPTS", 3)
        worker = _worker(api)
        for _ in range(4):
            worker.run_once()  # raised BadStatusLine before the fix
            time.sleep(0.05)  # past the 10 ms back-off
        assert [x["type"] for x in good.lines()] == ["license.created"]
        (msg,) = api.as_("a").get(f"/v1/webhooks/{evil['id']}/messages").json()
        assert msg["attempts"] == 3 and msg["status"] == "failed", msg
        assert msg["last_error"] == "not_http"
        log = (
            api.as_("a").get(f"/v1/webhooks/{evil['id']}/messages/{msg['msg_id']}/attempts").json()
        )
        assert [(a["status_code"], a["error"]) for a in log] == [(None, "not_http")] * 3
        assert "SSH" not in json.dumps(log)
    finally:
        good.kill()


def test_a_slow_receiver_is_cut_off_at_the_deadline_and_holds_no_one_else(
    allow_private_webhooks: None,
    no_worker: None,
    api: Api,
    tmp_path: Path,
    bad_receiver: Any,
) -> None:
    """Finding 2: the timeout was per socket read, so a receiver dripping a byte at a time
    held the single delivery thread indefinitely (56 s for 14 bytes)."""
    drip = bad_receiver("drip")
    url = f"http://127.0.0.1:{drip}/"
    t0 = time.monotonic()
    got = webhooks.send(url, "whsec_" + "A" * 44, "msg_1", b"{}", timeout=1.5, allow_private=True)
    took = time.monotonic() - t0
    assert got == (None, "timeout") and 1.4 < took < 5, (got, took)

    good = Receiver(free_port(), "", tmp_path / "good.jsonl")
    slow = api.as_("a").post("/v1/webhooks", json={"url": url, "events": ["license.created"]})
    hook = (
        api.as_("b")
        .post(
            "/v1/webhooks",
            json={"url": f"http://127.0.0.1:{good.port}/h", "events": ["license.created"]},
        )
        .json()
    )
    good.secret = hook["secret"]
    good.start()
    try:
        _event_for_each_vendor(api)
        _event_for_each_vendor(api)  # two messages for the slow one: still one deadline
        t0 = time.monotonic()
        import threading

        worker = _worker(api, timeout=2.0)
        th = threading.Thread(target=worker.run_once)
        th.start()
        _wait("the other vendor's deliveries", lambda: len(good.lines()) == 2, timeout=2.0)
        th.join(30)
        took = time.monotonic() - t0
        assert not th.is_alive() and took < 2.0 + 2.5, took
        msgs = api.as_("a").get(f"/v1/webhooks/{slow.json()['id']}/messages").json()
        assert sorted(m["attempts"] for m in msgs) == [0, 1]  # the pass left it after one
        assert {m["last_error"] for m in msgs} == {None, "timeout"}
    finally:
        good.kill()


def test_webhooks_refuse_internal_targets_unless_the_operator_allows_them(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 7: any host was accepted, and the delivery log read back connect errors and
    statuses of internal targets: a port scanner of the server's network."""
    a = api.as_("a")
    for url in (
        "http://127.0.0.1:5432/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/h",
        "http://192.168.0.10/h",
        "http://[::1]:22/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost:8400/",
        "https://0.0.0.0/",
        "http://100.64.0.1/",
    ):
        resp = a.post("/v1/webhooks", json={"url": url, "events": ["license.created"]})
        assert resp.status_code == 422, (url, resp.text)
    assert webhooks.public_address("93.184.215.14") and webhooks.public_address("2606:4700::1")
    # a name is checked when delivering, each time: DNS rebinding gets no second lookup
    made = a.post(
        "/v1/webhooks", json={"url": "http://hooks.example.com:9/h", "events": ["license.created"]}
    )
    assert made.status_code == 201, made.text
    good = Receiver(free_port(), made.json()["secret"], tmp_path / "good.jsonl")
    good.start()
    real = socket.getaddrinfo

    def rebound(host: str, *args: Any, **kw: Any) -> Any:
        if host == "hooks.example.com":  # an attacker's name that now points inside
            return real("127.0.0.1", good.port, *args[1:], **kw)
        return real(host, *args, **kw)

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", rebound)
    try:
        url = f"http://hooks.example.com:{good.port}/h"
        body = b'{"type":"license.created","data":{}}'
        assert webhooks.send(url, made.json()["secret"], "msg_1", body) == (
            None,
            "blocked_address",
        )
        # with the operator's setting the same delivery goes through, to the checked address
        got = webhooks.send(url, made.json()["secret"], "msg_2", body, allow_private=True)
        assert got == (200, None)
        assert [x["id"] for x in good.lines()] == ["msg_2"]
        # the log keeps a category, not the target's words or exact status
        closed = free_port()
        assert webhooks.send(f"http://127.0.0.1:{closed}/", "whsec_" + "A" * 44, "m", b"{}",
                             allow_private=True) == (None, "connect_failed")  # fmt: skip
    finally:
        good.kill()
