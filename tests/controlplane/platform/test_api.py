"""The Platform API in process: registry, documents, configs, images, deployments, gateway."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from modelseal.gateway.routes import hash_key, parse_config
from tests.controlplane.conftest import Api
from tests.controlplane.platform.conftest import SPEC
from tests.controlplane.platform.fakes import FakeBackend

P = "/v1/platform"


def _vendor_and_model(c: object, name: str = "demo") -> dict[str, object]:
    v = c.post(f"{P}/vendors", json={"name": "Acme AI", "business": "imaging", "phone": "+1 555"})  # type: ignore[attr-defined]
    assert v.status_code in (201, 409), v.text
    m = c.post(  # type: ignore[attr-defined]
        f"{P}/models",
        json={
            "vendor": "Acme AI",
            "name": name,
            "function": "classifies chest x-rays",
            "language": "Python",
            "version": {
                "version": "1.0.0",
                "config_url": "https://acme.example/demo.yaml",
                "image_name": "demo",
                "image_url": "registry.example.com/acme/demo:1.0.0",
            },
        },
    )
    assert m.status_code == 201, m.text
    return dict(m.json())


def test_registry_crud_search_and_filters(papi: Api) -> None:
    c = papi.as_("a")
    model = _vendor_and_model(c)
    assert model["vendor"] == "Acme AI" and model["versions"][0]["version"] == "1.0.0"
    assert c.post(f"{P}/vendors", json={"name": "Acme AI"}).status_code == 409
    c.post(f"{P}/vendors", json={"name": "Globex Labs", "business": "speech"})
    c.post(
        f"{P}/models",
        json={
            "vendor": "Globex Labs",
            "name": "asr",
            "function": "speech to text",
            "language": "C++",
        },
    )
    assert [v["name"] for v in c.get(f"{P}/vendors", params={"q": "IMAG"}).json()] == ["Acme AI"]
    assert [m["name"] for m in c.get(f"{P}/models", params={"q": "x-ray"}).json()] == ["demo"]
    assert [m["name"] for m in c.get(f"{P}/models", params={"language": "c++"}).json()] == ["asr"]
    assert [m["name"] for m in c.get(f"{P}/models", params={"vendor": "Globex Labs"}).json()] == [
        "asr"
    ]
    # a LIKE wildcard in the search is a literal character, not "anything"
    assert c.get(f"{P}/models", params={"q": "%"}).json() == []
    v2 = c.post(f"{P}/models/demo/versions", json={"version": "1.1.0"})
    assert v2.status_code == 201
    assert c.post(f"{P}/models/demo/versions", json={"version": "1.1.0"}).status_code == 409
    assert [v["version"] for v in c.get(f"{P}/models/demo").json()["versions"]] == [
        "1.0.0",
        "1.1.0",
    ]
    # a vendor with models cannot go; once they are gone it can
    assert c.delete(f"{P}/vendors/Globex Labs").status_code == 409
    assert c.delete(f"{P}/models/asr").status_code == 200
    assert c.delete(f"{P}/vendors/Globex Labs").status_code == 200
    assert c.get(f"{P}/vendors/Globex Labs").status_code == 404
    # images
    img = c.post(
        f"{P}/images",
        json={
            "name": "demo",
            "address": "registry.example.com/acme/demo:1.0.0",
            "digest": "sha256:" + "a" * 64,
        },
    )
    assert img.status_code == 201, img.text
    assert c.post(f"{P}/images", json={"name": "x", "address": "Not An Image!"}).status_code == 422
    assert c.get(f"{P}/images", params={"q": "acme"}).json()[0]["id"] == img.json()["id"]
    assert c.delete(f"{P}/images/{img.json()['id']}").status_code == 200


def test_the_auditor_reads_and_changes_nothing(papi: Api) -> None:
    c = papi.as_("a")
    _vendor_and_model(c)
    auditor = c.post("/v1/tokens", json={"name": "audit", "role": "auditor"}).json()["token"]
    c.headers["Authorization"] = f"Bearer {auditor}"
    assert c.get(f"{P}/models").status_code == 200
    for method, path, body in [
        ("POST", f"{P}/vendors", {"name": "x"}),
        ("DELETE", f"{P}/models/demo", None),
        ("POST", f"{P}/api-keys", {"name": "u"}),
        ("POST", f"{P}/gateway/key", None),
        ("GET", f"{P}/gateway/key/private", None),
    ]:
        assert c.request(method, path, json=body).status_code == 403, (method, path)
    resp = c.post(f"{P}/models/demo/documents", params={"kind": "usage"}, content=b"hello")
    assert resp.status_code == 403
    c.headers["Authorization"] = "Bearer nope"
    resp = c.post(f"{P}/models/demo/documents", params={"kind": "usage"}, content=b"hello")
    assert resp.status_code == 401


def _docx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document/>")
    return buf.getvalue()


def test_documents_are_sniffed_bounded_and_stored_under_names_we_choose(papi: Api) -> None:
    c = papi.as_("a")
    _vendor_and_model(c)
    blobs = papi.settings.data_dir / "blobs"
    cases = [
        (b"%PDF-1.7\n...", "design.pdf", "application/pdf"),
        (
            _docx(),
            "usage.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (b"# Usage\n\ncall /v2/models/demo/infer\n", "README.md", "text/markdown"),
        (b'{"cases": 12}', "../../../../etc/passwd", "application/json"),
    ]
    ids = []
    for data, name, ctype in cases:
        resp = c.post(
            f"{P}/models/demo/documents",
            params={"kind": "test", "filename": name},
            content=data,
            headers={"Content-Type": "text/html"},  # the client's word counts for nothing
        )
        assert resp.status_code == 201, resp.text
        doc = resp.json()
        assert doc["content_type"] == ctype
        assert doc["sha256"] == hashlib.sha256(data).hexdigest()
        assert "/" not in doc["filename"] and ".." not in doc["filename"]
        ids.append(doc["id"])
        got = c.get(f"{P}/documents/{doc['id']}/content")
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-type"].startswith(ctype)
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-disposition"].startswith("attachment;")
    # blobs are random hex names, none chosen by the uploader, and nothing escaped the folder
    names = sorted(p.name for p in blobs.iterdir())
    assert len(names) == 4 and all(len(n) == 32 and int(n, 16) >= 0 for n in names)
    assert not (Path("/etc") / "passwd.json").exists()
    # refused by their bytes: HTML, SVG, an executable, empty, a fake zip
    for data in [
        b"<!DOCTYPE html><script>alert(1)</script>",
        b"  <svg xmlns='http://www.w3.org/2000/svg'/>",
        b"\x7fELF\x02\x01\x01\x00" + bytes(64),
        b"",
        b"PK\x03\x04garbage",
    ]:
        resp = c.post(
            f"{P}/models/demo/documents",
            params={"kind": "design", "filename": "x.pdf"},
            content=data,
            headers={"Content-Type": "application/pdf"},
        )
        assert resp.status_code == 415, (data[:10], resp.text)
    # over the limit (16 MiB default): refused by Content-Length before reading
    big = b"a" * ((16 << 20) + 1)
    assert (
        c.post(f"{P}/models/demo/documents", params={"kind": "test"}, content=big).status_code
        == 413
    )

    # ... and when streamed without a length
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(17):
            yield b"a" * (1 << 20)

    assert (
        c.post(f"{P}/models/demo/documents", params={"kind": "test"}, content=chunks()).status_code
        == 413
    )
    assert len(list(blobs.iterdir())) == 4
    assert [d["kind"] for d in c.get(f"{P}/documents", params={"model": "demo"}).json()] == [
        "test"
    ] * 4
    assert c.delete(f"{P}/documents/{ids[0]}").status_code == 200
    assert len(list(blobs.iterdir())) == 3
    # deleting the model deletes its documents and their blobs
    assert c.delete(f"{P}/models/demo").status_code == 200
    assert list(blobs.iterdir()) == []
    assert c.get(f"{P}/documents/{ids[1]}").status_code == 404


def test_a_changed_blob_is_not_served(papi: Api) -> None:
    c = papi.as_("a")
    _vendor_and_model(c)
    doc = c.post(f"{P}/models/demo/documents", params={"kind": "usage"}, content=b"v1 text").json()
    (blob,) = (papi.settings.data_dir / "blobs").iterdir()
    blob.write_bytes(b"swapped")
    assert c.get(f"{P}/documents/{doc['id']}/content").status_code == 404


def test_configs_hold_validated_specs_only(papi: Api) -> None:
    c = papi.as_("a")
    _vendor_and_model(c)
    ok = c.post(f"{P}/configs", json={"name": "demo-prod", "spec": SPEC, "model": "demo"})
    assert ok.status_code == 201, ok.text
    assert ok.json()["deployment_name"] == "demo-classifier"
    bad = c.post(
        f"{P}/configs", json={"name": "bad", "spec": SPEC.replace("replicas: 1", "replicas: x")}
    )
    assert bad.status_code == 422
    assert "spec.replicas" in bad.json()["error"]["message"]
    assert c.post(f"{P}/configs", json={"name": "demo-prod", "spec": SPEC}).status_code == 409
    assert c.get(f"{P}/configs", params={"q": "classifier"}).json()[0]["name"] == "demo-prod"
    assert c.get(f"{P}/configs/demo-prod").json()["spec"] == SPEC


def test_routes_keys_and_the_gateway_config_with_etag(papi: Api) -> None:
    c = papi.as_("a")
    r = c.post(
        f"{P}/routes",
        json={
            "id": "echo",
            "prefix": "/echo",
            "forward_url": "http://127.0.0.1:9/",
            "decrypt": False,
        },
    )
    assert r.status_code == 201, r.text
    assert (
        c.post(
            f"{P}/routes", json={"id": "bad", "prefix": "/metrics", "forward_url": "http://x:1"}
        ).status_code
        == 422
    )
    assert (
        c.post(
            f"{P}/routes", json={"id": "echo2", "prefix": "/echo", "forward_url": "http://x:1"}
        ).status_code
        == 409
    )
    key = c.post(f"{P}/api-keys", json={"name": "alice", "routes": ["echo"], "rate_limit": "5/s"})
    assert key.status_code == 201, key.text
    secret = key.json()["key"]
    assert key.json()["sha256"] == hash_key(secret)
    assert secret not in c.get(f"{P}/api-keys").text
    assert c.post(f"{P}/api-keys", json={"name": "bob", "routes": ["nope"]}).status_code == 404
    assert c.post(f"{P}/api-keys", json={"name": "bob", "rate_limit": "lots"}).status_code == 422
    first = c.get(f"{P}/gateway/config")
    assert first.status_code == 200
    config = parse_config(first.json())  # exactly what a routes file would give
    assert config.match("/echo/x").id == "echo"  # type: ignore[union-attr]
    assert config.key_for(secret).name == "alice"  # type: ignore[union-attr]
    etag = first.headers["etag"]
    assert c.get(f"{P}/gateway/config", headers={"If-None-Match": etag}).status_code == 304
    c.post(f"{P}/api-keys/alice/revoke")
    changed = c.get(f"{P}/gateway/config", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert parse_config(changed.json()).key_for(secret) is None
    # the envelope key: made here, private half only for issuer/owner, sealed at rest
    made = c.post(f"{P}/gateway/key")
    assert made.status_code == 201
    assert c.post(f"{P}/gateway/key").status_code == 409
    private = c.get(f"{P}/gateway/key/private").json()["private_pem"]
    assert "PRIVATE KEY" in private
    from sqlalchemy import create_engine, text

    engine = create_engine(papi.settings.sqlalchemy_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT private_sealed FROM platform_gateway_keys")).scalar_one()
    engine.dispose()
    assert "PRIVATE" not in stored and stored.startswith("v1.")


def test_deploy_reserves_ports_creates_the_route_and_delete_frees_both(
    papi: Api, backend: FakeBackend, license_text: str
) -> None:
    c = papi.as_("a")
    _vendor_and_model(c)
    c.post(f"{P}/gateway/key")
    c.post(f"{P}/configs", json={"name": "demo-prod", "spec": SPEC, "model": "demo"})
    backend.used = frozenset({30000})  # a Service we did not create holds the first port
    dep = c.post(f"{P}/deployments", json={"config": "demo-prod", "license": license_text})
    assert dep.status_code == 201, dep.text
    d = dep.json()
    assert (
        d["node_ports"] == [30001] and d["phase"] == "Running" and d["route"] == "demo-classifier"
    )
    bundle, ports = backend.deployments[("models", "demo-classifier")]
    assert ports == (30001,) and bundle.license == license_text
    assert "BEGIN PUBLIC KEY" in (bundle.envelope_key or "")  # the platform's gateway key
    route = c.get(f"{P}/routes/demo-classifier").json()
    assert route["prefix"] == "/demo" and route["forward_url"] == "http://127.0.0.1:30001"
    used = c.get(f"{P}/nodeports", params={"count": 2}).json()
    assert used["used"] == [{"port": 30001, "owner": d["id"]}]
    # the backend's own Service on 30000 and our 30001 are both avoided
    assert used["recommended"] == [30002, 30003]
    # ports chosen by number: checked against the range and the records
    other = SPEC.replace("demo-classifier", "other").replace("/demo}", "/other}")
    for asked, code in [([30001], 409), ([40000], 409), ([30005, 30006], 409)]:
        resp = c.post(
            f"{P}/deployments",
            json={"spec": other, "license": license_text, "node_ports": asked},
        )
        assert resp.status_code == code, (asked, resp.text)
    chosen = c.post(
        f"{P}/deployments", json={"spec": other, "license": license_text, "node_ports": [30007]}
    )
    assert chosen.status_code == 201 and chosen.json()["node_ports"] == [30007]
    assert c.delete(f"{P}/deployments/other").json()["node_ports"] == [30007]
    # deploying the same name again updates in place and keeps its ports
    again = c.post(f"{P}/deployments", json={"spec": SPEC, "license": license_text})
    assert again.status_code == 201 and again.json()["id"] == d["id"]
    assert again.json()["node_ports"] == [30001]
    status = c.get(f"{P}/deployments/demo-classifier/status").json()
    assert status["ready"] is True and status["forward_url"] == "http://127.0.0.1:30001"
    assert (
        "serving models/demo-classifier" in c.get(f"{P}/deployments/{d['id']}/logs").json()["logs"]
    )
    # a route that is not the deployment's may not be deleted from under it... and vice versa
    assert c.delete(f"{P}/routes/demo-classifier").status_code == 409
    gone = c.delete(f"{P}/deployments/{d['id']}")
    assert gone.status_code == 200 and gone.json()["node_ports"] == [30001]
    assert ("models", "demo-classifier") not in backend.deployments
    assert c.get(f"{P}/routes/demo-classifier").status_code == 404
    assert c.get(f"{P}/nodeports").json()["used"] == []
    assert c.get(f"{P}/gateway/config").json()["routes"] == []


def test_a_failed_apply_or_bad_input_leaves_nothing_behind(
    papi: Api, backend: FakeBackend, license_text: str
) -> None:
    c = papi.as_("a")
    backend.fail_next = "image registry.example.com/acme/demo:1.0.0 not found"
    resp = c.post(
        f"{P}/deployments",
        json={"spec": SPEC, "license": license_text, "envelope_key": None},
    )
    # no gateway key and none sent: a 422 naming the field, before the backend is asked
    assert resp.status_code == 422 and "envelope_key" in resp.text
    assert backend.calls == []
    c.post(f"{P}/gateway/key")
    resp = c.post(f"{P}/deployments", json={"spec": SPEC, "license": license_text})
    assert resp.status_code == 502, resp.text
    assert "not found" in resp.json()["error"]["message"]
    assert c.get(f"{P}/deployments").json() == []
    assert c.get(f"{P}/nodeports").json()["used"] == []
    assert (
        c.post(f"{P}/deployments", json={"spec": SPEC, "license": "not a jws"}).status_code == 422
    )
    assert (
        c.post(
            f"{P}/deployments", json={"config": "x", "spec": SPEC, "license": license_text}
        ).status_code
        == 422
    )
    # a route in the way of the spec's prefix: 409 before anything runs
    c.post(f"{P}/routes", json={"id": "other", "prefix": "/demo", "forward_url": "http://x:1"})
    assert (
        c.post(f"{P}/deployments", json={"spec": SPEC, "license": license_text}).status_code == 409
    )
    assert backend.deployments == {}
    c.delete(f"{P}/routes/other")
    # the range runs out: 409, not a server error
    many = SPEC.replace("nodePorts: 1", "nodePorts: 1")
    for i in range(10):
        spec = many.replace("demo-classifier", f"demo-{i}").replace("/demo}", f"/demo{i}}}")
        assert (
            c.post(f"{P}/deployments", json={"spec": spec, "license": license_text}).status_code
            == 201
        )
    full = c.post(f"{P}/deployments", json={"spec": SPEC, "license": license_text})
    assert full.status_code == 409 and "NodePort" in full.text
    # another tenant cannot take a name that runs on the shared backend, and sees nothing
    b = papi.as_("b")
    b.post(f"{P}/gateway/key")
    spec0 = many.replace("demo-classifier", "demo-0").replace("/demo}", "/x}")
    assert (
        b.post(f"{P}/deployments", json={"spec": spec0, "license": license_text}).status_code == 409
    )
    assert b.get(f"{P}/deployments").json() == []
    assert all(u["owner"] == "(another tenant)" for u in b.get(f"{P}/nodeports").json()["used"])


def test_the_backend_is_closed_when_the_server_stops(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from modelseal.controlplane import db
    from modelseal.controlplane.app import create_app
    from modelseal.controlplane.platform.runtime import PlatformRuntime
    from modelseal.controlplane.settings import Settings

    settings = Settings(data_dir=tmp_path / "cp")
    engine = db.make_engine(settings)
    db.migrate(engine)
    engine.dispose()
    app = create_app(settings)
    backend = FakeBackend()
    app.state.platform = PlatformRuntime(settings, backend=backend)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert not backend.closed
    assert backend.closed
    app.state.cp.engine.dispose()


def test_documents_between_the_body_limit_and_the_document_limit_are_taken(papi: Api) -> None:
    """The larger limit holds while the body streams, not only for its Content-Length.

    Regression: the streaming count was reset to the 1 MiB body limit, so a
    3 MiB document passed the header check and was refused mid-body (413).
    """
    c = papi.as_("a")
    _vendor_and_model(c)
    data = b"%PDF-1.7\n" + bytes(3 << 20)
    resp = c.post(f"{P}/models/demo/documents", params={"kind": "design"}, content=data)
    assert resp.status_code == 201, resp.text
    assert resp.json()["sha256"] == hashlib.sha256(data).hexdigest()

    def chunks():  # type: ignore[no-untyped-def]
        yield b"%PDF-1.7\n"
        for _ in range(3):
            yield bytes(1 << 20)

    resp = c.post(f"{P}/models/demo/documents", params={"kind": "usage"}, content=chunks())
    assert resp.status_code == 201, resp.text
    # every other route keeps the small limit, by length and while streaming
    big = {"name": "x" * (2 << 20)}
    assert c.post(f"{P}/vendors", json=big).status_code == 413

    def more():  # type: ignore[no-untyped-def]
        for _ in range(2):
            yield bytes(1 << 20)

    assert c.post(f"{P}/vendors", content=more()).status_code == 413
