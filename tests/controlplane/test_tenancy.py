"""No vendor reads or changes another's data: every operation of the OpenAPI document,
called with vendor A's owner token against vendor B's objects, answers 404."""

from __future__ import annotations

import re
from typing import Any

from modelseal.crypto import ContentKey
from tests.controlplane.conftest import Api, catalog, fake_request, order

BODIES: dict[str, Any] = {
    "/v1/licenses/{ref}/renew": {"days": 1},
    "/v1/plans/{ref}": {"max_devices": 1},
    "/v1/users/{ref}/role": {"role": "auditor"},
    "/v1/devices/{ref}/unlock-code": {"reason": "support call", "totp": "123456"},
}


def test_every_operation_hides_other_vendors_objects(
    allow_private_webhooks: None, api: Api
) -> None:
    b = api.as_("b")
    ids = catalog(b, ContentKey.generate())
    made = order(b, ids)
    key = made["license_key"]
    device = b.post(
        "/v1/activate", json={"license_key": key, "request": fake_request(key, seed=1).to_json()}
    ).json()
    token = b.post("/v1/tokens", json={"name": "ci", "role": "auditor"}).json()
    user = b.post("/v1/users", json={"username": "zoe-globex", "role": "issuer"}).json()
    hook = b.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "events": ["license.revoked"]}
    ).json()
    objects = {
        "plans": [ids["plan"], b.get(f"/v1/plans/{ids['plan']}").json()["name"]],
        "customers": [ids["customer"], b.get(f"/v1/customers/{ids['customer']}").json()["name"]],
        "models": [ids["model"]],
        "licenses": [made["id"], key],
        "devices": [device["device"], device["device_id"]],
        "tokens": [token["id"]],
        "users": [user["id"], "zoe-globex"],
        "webhooks": [hook["id"]],
    }
    a = api.as_("a")
    a_ids = catalog(a, ContentKey.generate())  # A has objects of its own, too
    order(a, a_ids)
    spec = a.get("/openapi.json").json()
    checked = 0
    for path, item in spec["paths"].items():
        for method in item:
            params = re.findall(r"{(\w+)}", path)
            if not params or path.startswith("/v1/platform/"):
                continue  # the Platform area's own walk: tests/controlplane/platform/
            collection = path.split("/")[2]
            for ref in objects[collection]:
                url = re.sub(r"{\w+}", ref, path)
                body = BODIES.get(path)
                if path.endswith("/activate-offline"):
                    body = {"request": fake_request(key, seed=2).to_json()}
                resp = a.request(method.upper(), url, json=body)
                assert resp.status_code == 404, (method, url, resp.status_code, resp.text)
                checked += 1
    assert checked >= 25
    # lists and reads without a path parameter show none of B's objects
    for path, item in spec["paths"].items():
        if "get" in item and "{" not in path and path.startswith("/v1/"):
            text = a.get(path).text
            for refs in objects.values():
                for ref in refs:
                    assert ref not in text, (path, ref)
    # an order naming B's customer, plan and model is refused the same way
    resp = a.post(
        "/v1/orders",
        json={"customer": ids["customer"], "plan": a_ids["plan"], "models": [a_ids["model"]]},
    )
    assert resp.status_code == 404
    resp = a.post(
        "/v1/orders",
        json={"customer": a_ids["customer"], "plan": a_ids["plan"], "models": [ids["model"]]},
    )
    assert resp.status_code == 404
    # and nothing of B's changed
    b = api.as_("b")
    assert b.get(f"/v1/licenses/{made['id']}").json()["status"] == "active"
    assert b.get(f"/v1/devices/{device['device']}").json()["status"] == "active"
    assert all(t["revoked_at"] is None for t in b.get("/v1/tokens").json())
    assert all(
        u["disabled_at"] is None and u["role"] == "issuer" for u in b.get("/v1/users").json()
    )
    assert b.get("/v1/licenses").json()[0]["expires_at"] == made["expires_at"]
    assert b.get(f"/v1/webhooks/{hook['id']}").json()["disabled_at"] is None
