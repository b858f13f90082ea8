"""Reports equal what the ledger holds (recomputed from the API's own lists), in CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from modelseal.crypto import ContentKey
from tests.controlplane.conftest import Api, Server, catalog, fake_request, order, run_cli


def _csv(body: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body)))


def _plan(client, name: str, days: int, max_calls: int | None) -> str:  # type: ignore[no-untyped-def]
    resp = client.post(
        "/v1/plans",
        json={"name": name, "kind": "subscription", "days": days, "max_calls": max_calls},
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def test_reports_equal_the_ledger(api: Api) -> None:
    a = api.as_("a")
    ids = catalog(a, ContentKey.generate())
    short = _plan(a, "short", 10, 1000)
    long_ = _plan(a, "long", 60, None)
    customers = []
    for name in ("=cmd|' /C calc'!A0", "beta clinic", "gamma"):  # the first: a CSV injection
        customers.append(a.post("/v1/customers", json={"name": name}).json()["id"])
    made = []
    for n in range(9):
        body = {
            "customer": customers[n % 3],
            "plan": short if n % 2 else long_,
            "models": [ids["model"]],
        }
        resp = a.post("/v1/orders", json=body)
        assert resp.status_code == 201
        made.append(resp.json())
    for n, lic in enumerate(made[:6]):
        for d in range(n % 3):
            key = lic["license_key"]
            act = a.post(
                "/v1/activate",
                json={"license_key": key, "request": fake_request(key, seed=100 * n + d).to_json()},
            )
            assert act.status_code == 201
    a.post(f"/v1/licenses/{made[0]['id']}/revoke")
    a.post(f"/v1/licenses/{made[1]['id']}/suspend")
    engine = api.client.app.state.cp.engine
    with engine.begin() as conn:
        # reported usage (heartbeats write it) and one license already past its expiry
        conn.execute(text("UPDATE devices SET calls_used = 250 + length(id)"))
        conn.execute(
            text("UPDATE licenses SET expires_at = :t WHERE id = :i"),
            {"t": int(time.time()) - 60, "i": made[2]["id"]},
        )
        # an activation two days ago
        conn.execute(
            text(
                "UPDATE devices SET activated_at = activated_at - 2 * 86400 WHERE license_id = :i"
            ),
            {"i": made[4]["id"]},
        )

    licenses = a.get("/v1/licenses").json()
    plans = {p["id"]: p for p in a.get("/v1/plans").json()}
    custs = {c["id"]: c["name"] for c in a.get("/v1/customers").json()}
    devices = a.get("/v1/devices").json()
    now = int(time.time())

    def status(lic: dict) -> str:  # type: ignore[type-arg]
        if lic["status"] == "active" and lic["expires_at"] is not None and lic["expires_at"] <= now:
            return "expired"
        return str(lic["status"])

    # 1. licenses by plan and status
    want = Counter((plans[x["plan_id"]]["name"], status(x)) for x in licenses)
    got = a.get("/v1/reports/licenses", params={"format": "json"}).json()
    assert {(r["plan"], r["status"]): r["licenses"] for r in got} == dict(want)
    assert sum(r["active_devices"] for r in got) == sum(d["status"] == "active" for d in devices)
    assert {r["status"] for r in got} >= {"revoked", "suspended", "expired", "active"}
    # 2. activations per day
    per_day = Counter(
        datetime.fromtimestamp(d["activated_at"], UTC).strftime("%Y-%m-%d") for d in devices
    )
    got = a.get("/v1/reports/activations", params={"format": "json"}).json()
    assert {r["day"]: r["activations"] for r in got} == dict(per_day)
    assert len(got) == 2
    # 3. usage per license and customer against the quota (CSV)
    resp = a.get("/v1/reports/usage")
    assert resp.headers["content-type"].startswith("text/csv")
    rows = _csv(resp.text)
    assert len(rows) == len(licenses)
    for lic in licenses:
        row = next(r for r in rows if r["license"] == lic["id"])
        mine = [d for d in devices if d["license_id"] == lic["id"]]
        used = sum(d["calls_used"] for d in mine)
        assert int(row["calls_used"]) == used
        assert int(row["devices"]) == len(mine)
        quota = plans[lic["plan_id"]]["max_calls"]
        assert row["quota"] == ("" if quota is None else str(quota))
        if quota:
            assert float(row["quota_used_percent"]) == round(100 * used / quota, 2)
        name = custs[lic["customer_id"]]
        assert row["customer"] == ("'" + name if name.startswith("=") else name)
    # 4. expiring within 30 days: the active 10-day licenses, not the expired or 60-day ones
    want_exp = {
        x["id"]
        for x in licenses
        if status(x) == "active" and x["expires_at"] and x["expires_at"] <= now + 30 * 86400
    }
    got = a.get("/v1/reports/expiring", params={"format": "json", "days": 30}).json()
    assert {r["license"] for r in got} == want_exp and want_exp
    assert all(r["days_left"] in (9, 10) for r in got)
    assert a.get("/v1/reports/expiring", params={"format": "json", "days": 90}).json()
    # since: only licenses created from then on
    future = datetime.fromtimestamp(now + 3600, UTC).isoformat()
    assert a.get("/v1/reports/usage", params={"since": future}).text.count("\n") == 1
    assert a.get("/v1/reports/usage", params={"since": "yesterday"}).status_code == 422
    # another vendor's report is empty
    assert api.as_("b").get("/v1/reports/usage", params={"format": "json"}).json() == []


def test_the_cli_writes_reports(server: Server, tmp_path: Path) -> None:
    with server.client() as c:
        ids = catalog(c, ContentKey.generate())
        for _ in range(3):
            order(c, ids)
    base = ["admin", "--server", server.url, "--token-file", str(server.token_file)]
    out = tmp_path / "licenses.csv"
    run_cli(*base, "report", "licenses", "--out", str(out))
    rows = _csv(out.read_text())
    assert [(r["status"], r["licenses"], r["active_devices"]) for r in rows] == [
        ("active", "3", "0")
    ]
    again = run_cli(*base, "report", "licenses", "--out", str(out), check=False)
    assert again.returncode == 2  # exists, no --force
    shown = run_cli(*base, "report", "usage", "--format", "json")
    assert len(json.loads(shown.stdout)) == 3
    bad = run_cli(*base, "report", "refunds", check=False)
    assert bad.returncode == 2


def test_a_report_read_on_sqlite_does_not_hold_the_write_lock(api: Api) -> None:
    """Reports stream from ``db.read_session``: a writer commits while the read is open
    (before, SQLite reports were read whole first because every transaction took the
    write lock)."""
    import sqlite3

    from sqlalchemy import select

    from modelseal.controlplane import db
    from modelseal.controlplane.models import Vendor

    state = api.client.app.state.cp  # type: ignore[attr-defined]
    if not state.settings.is_sqlite:
        return  # PostgreSQL readers never block writers; the server-side cursor is enough
    with db.read_session(state.engine) as session:
        rows = session.execute(select(Vendor.name).execution_options(yield_per=1))
        first = next(iter(rows))
        writer = sqlite3.connect(state.engine.url.database, timeout=2)
        try:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("UPDATE vendors SET name = name || '-renamed'")
            writer.execute("COMMIT")
        finally:
            writer.close()
        rest = [r[0] for r in rows]
        # the read sees its own snapshot: none of the renames
        assert not any(name.endswith("-renamed") for name in [first[0], *rest])
