"""Self-service device replacement: within the plan's limit per period, then refused."""

from __future__ import annotations

import json

from sqlalchemy import text

from modelseal.crypto import ContentKey
from tests.controlplane.conftest import Api, Server, catalog, fake_request, order, run_cli


def _activate(client, key: str, seed: int) -> dict:  # type: ignore[no-untyped-def,type-arg]
    resp = client.post(
        "/v1/activate", json={"license_key": key, "request": fake_request(key, seed=seed).to_json()}
    )
    return {"status": resp.status_code, **resp.json()}


def test_replacements_within_the_limit_then_refused(api: Api) -> None:
    a = api.as_("a")
    ids = catalog(a, ContentKey.generate(), max_devices=1)
    plan = a.get(f"/v1/plans/{ids['plan']}").json()
    assert (plan["replacements"], plan["replacement_days"]) == (2, 90)  # the default
    lic = order(a, ids)
    key = lic["license_key"]
    first = _activate(a, key, 1)
    assert first["status"] == 201
    assert _activate(a, key, 2)["error"]["code"] == "TOO_MANY_DEVICES"  # one seat
    # replacement 1 and 2: release the old device by the key, activate the new one
    current = first
    for n, seed in enumerate((2, 3), start=1):
        rel = a.post("/v1/release", json={"license_key": key, "device": current["device_id"]})
        assert rel.status_code == 200, rel.text
        assert rel.json()["replacements_used"] == n
        new = _activate(a, key, seed)
        assert new["status"] == 201, new
        current = new
    # a third within 90 days: refused with a clear reason; the device keeps its seat
    refused = a.post("/v1/release", json={"license_key": key, "device": current["device"]})
    assert refused.status_code == 403
    err = refused.json()["error"]
    assert err["code"] == "TOO_MANY_REPLACEMENTS"
    assert "2 times in the last 90 days" in err["message"] and "vendor" in err["message"]
    assert a.get(f"/v1/devices/{current['device']}").json()["status"] == "active"
    events = [r["event"] for r in a.get("/v1/audit", params={"limit": 1000}).json()]
    assert events.count("device.deactivated") == 2 and "device.release_refused" in events
    # the vendor is not limited
    assert a.post(f"/v1/devices/{current['device']}/deactivate").status_code == 200
    assert _activate(a, key, 4)["status"] == 201
    # wrong key, or a device of another license: not found; a bad key: 422
    other = order(a, ids)
    other_dev = _activate(a, other["license_key"], 5)
    missing = a.post("/v1/release", json={"license_key": key, "device": other_dev["device_id"]})
    assert missing.status_code == 404
    bad = a.post("/v1/release", json={"license_key": "not-a-key-at-all-xxxxx", "device": "x"})
    assert bad.status_code == 422
    # once the oldest release is 90 days old, one more is allowed
    with api.client.app.state.cp.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE seat_releases SET released_at = released_at - 91 * 86400"
                " WHERE released_at = (SELECT MIN(released_at) FROM seat_releases)"
            )
        )
    latest = a.get(f"/v1/licenses/{lic['id']}/devices").json()
    active = next(d for d in latest if d["status"] == "active")
    again = a.post("/v1/release", json={"license_key": key, "device": active["device_id"]})
    assert again.status_code == 200, again.text


def test_a_plan_without_self_service_and_the_cli(server: Server) -> None:
    with server.client() as c:
        ids = catalog(c, ContentKey.generate())
        plan = c.post(
            "/v1/plans",
            json={"name": "locked", "kind": "perpetual", "replacements": 0, "max_devices": 2},
        ).json()
        lic = c.post(
            "/v1/orders",
            json={"customer": ids["customer"], "plan": plan["id"], "models": [ids["model"]]},
        ).json()
        dev = _activate(c, lic["license_key"], 1)
        ids2 = catalog(c, ContentKey.generate())
        lic2 = order(c, ids2)
        dev2 = _activate(c, lic2["license_key"], 2)
    refused = run_cli(
        "device", "release", "--server", server.url, "--key", lic["license_key"],
        "--device", dev["device_id"], check=False,
    )  # fmt: skip
    assert refused.returncode == 25, refused.stderr
    assert "no self-service replacement" in refused.stderr
    ok = run_cli(
        "device", "release", "--server", server.url, "--key", lic2["license_key"],
        "--device", dev2["device_id"], "--json",
    )  # fmt: skip
    data = json.loads(ok.stdout)
    assert data["replacements_used"] == 1 and data["replacements_allowed"] == 2
