"""No tenant reads or changes another's Platform objects: every ``/v1/platform`` operation
with a path parameter, called with tenant A's owner token on tenant B's objects, is a 404;
A's lists and A's gateway config show none of B's objects."""

from __future__ import annotations

import re
from typing import Any

from tests.controlplane.conftest import Api
from tests.controlplane.platform.conftest import SPEC
from tests.controlplane.platform.fakes import FakeBackend

P = "/v1/platform"


def _objects(c: Any, license_text: str) -> dict[str, list[str]]:
    vendor = c.post(f"{P}/vendors", json={"name": "Initech"}).json()
    model = c.post(
        f"{P}/models",
        json={"vendor": vendor["id"], "name": "b-model", "version": {"version": "1.0"}},
    ).json()
    doc = c.post(
        f"{P}/models/{model['id']}/documents", params={"kind": "usage"}, content=b"b's secret"
    ).json()
    config = c.post(f"{P}/configs", json={"name": "b-config", "spec": SPEC}).json()
    image = c.post(f"{P}/images", json={"name": "b", "address": "registry.example.com/b:1"}).json()
    route = c.post(
        f"{P}/routes", json={"id": "b-route", "prefix": "/b", "forward_url": "http://127.0.0.1:9"}
    ).json()
    key = c.post(f"{P}/api-keys", json={"name": "b-user"}).json()
    c.post(f"{P}/gateway/key")
    dep = c.post(f"{P}/deployments", json={"config": config["id"], "license": license_text})
    assert dep.status_code == 201, dep.text
    return {
        "vendors": [vendor["id"], vendor["name"]],
        "models": [model["id"], model["name"]],
        "documents": [doc["id"]],
        "configs": [config["id"], config["name"]],
        "images": [image["id"]],
        "routes": [route["id"]],
        "api-keys": [key["id"], key["name"]],
        "deployments": [dep.json()["id"], dep.json()["name"]],
    }


BODIES: dict[str, Any] = {"/v1/platform/models/{ref}/versions": {"version": "9.9"}}


def test_every_platform_operation_hides_other_tenants_objects(
    papi: Api, backend: FakeBackend, license_text: str
) -> None:
    objects = _objects(papi.as_("b"), license_text)
    a = papi.as_("a")
    a.post(f"{P}/vendors", json={"name": "Own"})  # A has objects of its own
    spec = a.get("/openapi.json").json()
    checked = 0
    for path, item in spec["paths"].items():
        if not path.startswith(P + "/") or "{" not in path:
            continue
        collection = path.split("/")[3]
        for method in item:
            for ref in objects[collection]:
                url = re.sub(r"{\w+}", ref, path)
                kwargs: dict[str, Any] = {"json": BODIES.get(path)}
                if path.endswith("/documents"):
                    kwargs = {"params": {"kind": "test"}, "content": b"A's text"}
                resp = a.request(method.upper(), url, **kwargs)
                assert resp.status_code == 404, (method, url, resp.status_code, resp.text)
                checked += 1
    assert checked >= 33
    for path, item in spec["paths"].items():
        if path.startswith(P + "/") and "get" in item and "{" not in path:
            body = a.get(path).text
            for refs in objects.values():
                for ref in refs:
                    assert ref not in body, (path, ref)
    # nothing of B's changed, and B's deployment still runs
    b = papi.as_("b")
    assert b.get(f"{P}/api-keys").json()[0]["revoked_at"] is None
    assert b.get(f"{P}/documents/{objects['documents'][0]}/content").content == b"b's secret"
    assert ("models", "demo-classifier") in backend.deployments
    assert b.get(f"{P}/gateway/config").json()["routes"][0]["id"] in ("b-route", "demo-classifier")
