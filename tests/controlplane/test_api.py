"""The API in process (FastAPI's TestClient) on SQLite and on PostgreSQL."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelseal.controlplane import db
from modelseal.controlplane.app import create_app
from modelseal.crypto import ContentKey, b64url, b64url_decode
from modelseal.license import read_unverified, verify_license
from modelseal.license.heartbeat import (
    HeartbeatRequest,
    authorization_header,
    device_credential,
    new_nonce,
    verify_reply,
)
from modelseal.license.licensekey import activation_salt
from tests.controlplane.conftest import Api, catalog, fake_request, order, trust_of
from tests.license.conftest import make_device


def test_health_and_readiness(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok", "schema_revision": None}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["schema_revision"] == db.head_revision()


def test_requests_without_a_valid_token_are_401(api: Api) -> None:
    api.client.headers.pop("Authorization", None)
    assert api.client.get("/v1/plans").status_code == 401
    api.client.headers["Authorization"] = "Bearer mst_not-a-token"
    resp = api.client.get("/v1/plans")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"


def test_roles(api: Api) -> None:
    owner = api.as_("a")
    made = owner.post("/v1/tokens", json={"name": "audit", "role": "auditor"})
    assert made.status_code == 201
    auditor_token = made.json()["token"]
    listed = owner.get("/v1/tokens").json()
    assert all("token" not in t for t in listed)  # shown once, never listed
    api.tokens["auditor"] = auditor_token
    auditor = api.as_("auditor")
    assert auditor.get("/v1/plans").status_code == 200
    refused = auditor.post("/v1/customers", json={"name": "x"})
    assert refused.status_code == 403
    assert auditor.post("/v1/tokens", json={"name": "x"}).status_code == 403
    owner = api.as_("a")
    assert owner.post(f"/v1/tokens/{made.json()['id']}/revoke").status_code == 200
    assert api.as_("auditor").get("/v1/plans").status_code == 401


def test_model_registration_checks_the_content_key(api: Api, content_key: ContentKey) -> None:
    client = api.as_("a")
    other = ContentKey.generate()
    resp = client.post(
        "/v1/models",
        json={
            "model_id": "acme/ocr",
            "key_id": content_key.key_id,
            "content_key": b64url(other.raw()),
        },
    )
    assert resp.status_code == 422
    assert "key_id" in resp.json()["error"]["message"]
    ok = client.post(
        "/v1/models",
        json={
            "model_id": "acme/ocr",
            "key_id": content_key.key_id,
            "content_key": b64url(content_key.raw()),
        },
    )
    assert ok.status_code == 201
    assert "content_key" not in ok.json()


def test_order_activation_and_the_license_it_yields(
    api: Api, content_key: ContentKey, tmp_path: Path
) -> None:
    client = api.as_("a")
    ids = catalog(client, content_key)
    made = order(client, ids)
    key = made["license_key"]
    assert len(key) == 29 and key.count("-") == 4
    by_key = client.get(f"/v1/licenses/{key.lower()}")  # read out over the phone: case-free
    assert by_key.status_code == 200 and by_key.json()["id"] == made["id"]

    req = fake_request(key, seed=1)
    resp = client.post("/v1/activate", json={"license_key": key, "request": req.to_json()})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["reactivated"] is False
    trust = trust_of(client, tmp_path)
    lic = verify_license(body["license"], trust, audience="acme/ocr", issuer="acme")
    assert lic.claims.jti == made["id"]
    assert lic.claims.heartbeat is not None
    assert lic.claims.heartbeat.url == "http://127.0.0.1:9/v1/heartbeat"
    assert lic.claims.device is not None and lic.claims.device.salt == req.salt
    assert lic.claims.limits.devices == 5
    assert "secret" not in body["license"]  # no component secret in the license
    assert client.get(f"/v1/licenses/{made['id']}").json()["devices"] == 1


def test_the_same_device_reactivates_on_its_seat(api: Api, content_key: ContentKey) -> None:
    client = api.as_("a")
    ids = catalog(client, content_key, max_devices=1)
    key = order(client, ids)["license_key"]
    first = client.post(
        "/v1/activate", json={"license_key": key, "request": fake_request(key, seed=7).to_json()}
    )
    assert first.status_code == 201
    # a reinstall: same components, fresh nonce, a new label
    again_req = fake_request(key, seed=7, label="reinstalled").to_json()
    again = client.post("/v1/activate", json={"license_key": key, "request": again_req})
    assert again.status_code == 201, again.text
    assert again.json()["reactivated"] is True
    assert again.json()["device"] == first.json()["device"]
    assert again.json()["license"] == first.json()["license"]  # its seat's license, unchanged
    other = client.post(
        "/v1/activate", json={"license_key": key, "request": fake_request(key, seed=8).to_json()}
    )
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "TOO_MANY_DEVICES"


def test_digests_copied_from_a_license_do_not_take_over_its_seat(
    api: Api, content_key: ContentKey
) -> None:
    # review finding: a request built from the digests in a copied license, with
    # secrets of the attacker's choosing, "reactivated" the seat, replaced its
    # heartbeat credential and received the content keys wrapped for those secrets
    from modelseal.device.fingerprint import COMPONENT_KINDS
    from modelseal.device.request import ActivationRequest, Environment, RequestComponent
    from modelseal.license.errors import LicenseError
    from modelseal.license.keydelivery import KeyDelivery, LocalSecret, recover_kek

    client = api.as_("a")
    key = order(client, catalog(client, content_key, max_devices=1))["license_key"]
    first = client.post(
        "/v1/activate", json={"license_key": key, "request": fake_request(key, seed=11).to_json()}
    ).json()
    copied = read_unverified(first["license"])[1]
    forged = ActivationRequest(
        version=2,
        label="attacker",
        nonce=b64url(secrets.token_bytes(16)),
        created_at="2026-12-01T00:00:00Z",
        salt=b64url(activation_salt(key)),
        environment=Environment(virtualization="none", details=(), platform="linux"),
        components=tuple(
            sorted(
                (
                    RequestComponent(
                        kind=c["kind"],
                        strength=COMPONENT_KINDS[c["kind"]].strength,
                        weight=c["weight"],
                        digest=c["digest"],
                        secret=b64url(secrets.token_bytes(32)),
                    )
                    for c in copied["device"]["components"]
                ),
                key=lambda c: (c.kind, c.digest),
            )
        ),
    )
    resp = client.post("/v1/activate", json={"license_key": key, "request": forged.to_json()})
    assert resp.status_code == 201, resp.text
    # what comes back is the copy the attacker already had, not a license for them
    assert resp.json()["license"] == first["license"]
    claims = read_unverified(resp.json()["license"])[1]
    delivery = KeyDelivery.model_validate(claims["keys"])
    chosen = [LocalSecret(kind=c.kind, secret=b64url_decode(c.secret)) for c in forged.components]
    with pytest.raises(LicenseError):
        recover_kek(delivery, jti=claims["jti"], local=chosen)
    assert client.get(f"/v1/licenses/{first['license_id']}").json()["devices"] == 1


def test_a_request_made_for_another_key_is_refused(api: Api, content_key: ContentKey) -> None:
    client = api.as_("a")
    ids = catalog(client, content_key)
    key1, key2 = order(client, ids)["license_key"], order(client, ids)["license_key"]
    resp = client.post(
        "/v1/activate", json={"license_key": key1, "request": fake_request(key2).to_json()}
    )
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "REQUEST_NOT_FOR_THIS_KEY"
    assert activation_salt(key1) != activation_salt(key2)


def test_offline_activation_revocation_suspension_renewal(
    api: Api, content_key: ContentKey
) -> None:
    client = api.as_("a")
    ids = catalog(client, content_key)
    made = order(client, ids)
    req = fake_request(made["license_key"], seed=3)
    resp = client.post(
        f"/v1/licenses/{made['id']}/activate-offline", json={"request": req.to_json()}
    )
    assert resp.status_code == 201, resp.text
    exp_before = read_unverified(resp.json()["license"])[1]["exp"]
    assert client.post(f"/v1/licenses/{made['id']}/suspend").json()["status"] == "suspended"
    blocked = client.post(
        "/v1/activate",
        json={
            "license_key": made["license_key"],
            "request": fake_request(made["license_key"]).to_json(),
        },
    )
    assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "SUSPENDED"
    assert client.post(f"/v1/licenses/{made['id']}/reinstate").json()["status"] == "active"
    renewed = client.post(f"/v1/licenses/{made['id']}/renew", json={"days": 10})
    assert renewed.json()["expires_at"] == exp_before + 10 * 86400
    assert client.post(f"/v1/licenses/{made['id']}/revoke").json()["status"] == "revoked"
    back = client.post(f"/v1/licenses/{made['id']}/reinstate")
    assert back.status_code == 409


def _heartbeat(
    client: TestClient, token: str, kek_credential: bytes, *, nonce: str | None = None
) -> tuple[int, Any, str]:
    _, claims = read_unverified(token)
    nonce = nonce or new_nonce()
    body = HeartbeatRequest(
        license_id=claims["jti"],
        device_id=claims["device"]["device_id"],
        nonce=nonce,
        time=0,
        calls_used=5,
    ).to_body()
    resp = client.post(
        "/v1/heartbeat",
        content=body,
        headers={
            "Authorization": authorization_header(kek_credential, body),
            "Content-Type": "application/json",
        },
    )
    return resp.status_code, resp.json(), nonce


def test_heartbeats_are_signed_bound_and_need_the_device_credential(
    api: Api, content_key: ContentKey, tmp_path: Path
) -> None:
    from modelseal.license.verify import license_kek

    client = api.as_("a")
    ids = catalog(client, content_key, heartbeat=60)
    made = order(client, ids)
    key = made["license_key"]
    # a real device this time: its KEK yields the credential
    from modelseal.device import make_request

    fp = make_device()
    req = make_request(fp, label="box", salt=activation_salt(key))
    token = client.post("/v1/activate", json={"license_key": key, "request": req.to_json()}).json()[
        "license"
    ]
    trust = trust_of(client, tmp_path)
    lic = verify_license(token, trust, fingerprint=fp)
    credential = device_credential(license_kek(lic, fp), jti=lic.claims.jti)

    status, body, nonce = _heartbeat(client, token, credential)
    assert status == 200, body
    verdict = verify_reply(
        body["reply"],
        trust,
        license_id=lic.claims.jti,
        device_id=lic.claims.device.device_id,
        nonce=nonce,
    )  # type: ignore[union-attr]
    assert verdict.code == "VALID" and verdict.interval == 60
    assert client.get("/v1/devices").json()[0]["calls_used"] == 5

    # a copy elsewhere cannot compute the credential: 401, nothing signed
    status, body, _ = _heartbeat(client, token, secrets.token_bytes(32))
    assert status == 401

    client.post(f"/v1/licenses/{made['id']}/renew", json={"days": 5})
    _, body, nonce = _heartbeat(client, token, credential)
    verdict = verify_reply(
        body["reply"],
        trust,
        license_id=lic.claims.jti,
        device_id=lic.claims.device.device_id,
        nonce=nonce,
    )  # type: ignore[union-attr]
    assert verdict.license_token is not None
    renewed = verify_license(verdict.license_token, trust, fingerprint=fp)
    assert renewed.claims.exp == lic.claims.exp + 5 * 86400  # type: ignore[operator]

    client.post(f"/v1/licenses/{made['id']}/revoke")
    _, body, nonce = _heartbeat(client, token, credential)
    verdict = verify_reply(
        body["reply"],
        trust,
        license_id=lic.claims.jti,
        device_id=lic.claims.device.device_id,
        nonce=nonce,
    )  # type: ignore[union-attr]
    assert verdict.code == "REVOKED"


def test_key_rotation_keeps_old_licenses_verifiable(
    api: Api, content_key: ContentKey, tmp_path: Path
) -> None:
    client = api.as_("a")
    ids = catalog(client, content_key)
    key = order(client, ids)["license_key"]
    old = client.post(
        "/v1/activate", json={"license_key": key, "request": fake_request(key, seed=1).to_json()}
    )
    rotated = client.post("/v1/keys/rotate")
    assert rotated.status_code == 201
    key2 = order(client, ids)["license_key"]
    new = client.post(
        "/v1/activate", json={"license_key": key2, "request": fake_request(key2, seed=2).to_json()}
    )
    assert client.get("/v1/keys/trust?format=pem").text.count("BEGIN PUBLIC KEY") == 2
    trust = trust_of(client, tmp_path)  # one trust file, both keys, pinned to "acme"
    assert len(trust) == 2
    for resp in (old, new):
        verify_license(resp.json()["license"], trust, issuer="acme")
    # the pin: a key of this vendor cannot sign in another vendor's name
    forged = read_unverified(new.json()["license"])[1] | {"iss": "globex"}
    from modelseal.license.errors import LicenseError

    assert forged["iss"] == "globex"
    with pytest.raises(LicenseError):
        verify_license(new.json()["license"], trust, issuer="globex")
    assert read_unverified(new.json()["license"])[0]["kid"] == rotated.json()["kid"]


def test_customer_usage(api: Api, content_key: ContentKey) -> None:
    client = api.as_("a")
    ids = catalog(client, content_key)
    key = order(client, ids)["license_key"]
    client.post("/v1/activate", json={"license_key": key, "request": fake_request(key).to_json()})
    usage = client.get(f"/v1/customers/{ids['customer']}/usage").json()
    assert {k: usage[k] for k in ("customer_id", "licenses", "devices", "calls_used")} == {
        "customer_id": ids["customer"],
        "licenses": 1,
        "devices": 1,
        "calls_used": 0,
    }
    assert usage["calls_leased"] == 0
    assert [b["devices"] for b in usage["by_license"]] == [1]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v1/plans", {"name": "x", "kind": "weekly", "days": 3}),
        ("post", "/v1/plans", {"name": "x", "days": "many"}),
        ("post", "/v1/plans", {"name": "x", "kind": "trial"}),
        ("post", "/v1/plans", {"name": "", "days": 1}),
        ("post", "/v1/plans", {"name": "x", "days": 1, "surprise": 1}),
        ("post", "/v1/customers", ["not", "an", "object"]),
        ("post", "/v1/models", {"model_id": "m", "key_id": "k", "content_key": "!!"}),
        ("post", "/v1/orders", {"customer": "c", "plan": "p", "models": []}),
        ("post", "/v1/activate", {"license_key": "ABCDE", "request": {}}),
        ("post", "/v1/activate", {"license_key": "0" * 25, "request": {"version": 2}}),
        ("post", "/v1/heartbeat", {"v": 1}),
    ],
)
def test_malformed_requests_get_a_clear_4xx(api: Api, method: str, path: str, body: Any) -> None:
    resp = getattr(api.as_("a"), method)(path, json=body)
    assert 400 <= resp.status_code < 500, resp.text
    error = resp.json()["error"]
    assert error["message"] and error["code"]


def test_oversized_bodies_are_refused_with_413(api: Api) -> None:
    resp = api.as_("a").post(
        "/v1/customers",
        content=b"{" + b" " * (2 << 20) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 413


def test_a_write_is_committed_before_its_response_exists(api: Api, content_key: ContentKey) -> None:
    """Regression: the session committed after the response was sent (FastAPI's default
    teardown order), so a crash could lose an acknowledged order (found by kill -9)."""
    from sqlalchemy import text

    seen: list[int] = []
    engine = db.make_engine(api.settings)
    app = create_app(api.settings)

    @app.middleware("http")
    async def look(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        if request.url.path == "/v1/orders":
            with engine.connect() as conn:
                seen.append(conn.execute(text("SELECT count(*) FROM licenses")).scalar_one())
        return response

    ids = catalog(api.as_("a"), content_key)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        client.headers["Authorization"] = f"Bearer {api.tokens['a']}"
        order(client, ids)
    app.state.cp.engine.dispose()
    engine.dispose()
    assert seen == [1]


def test_a_signed_revocation_list_locks_an_air_gapped_guard(
    api: Api, content_key: ContentKey, tmp_path: Path
) -> None:
    from modelseal.device import StaticSource, make_request
    from modelseal.guard import Guard, NotLicensedError
    from modelseal.license.heartbeat import HeartbeatReplyError, verify_revocations

    client = api.as_("a")
    ids = catalog(client, content_key)
    made, other = order(client, ids), order(client, ids)
    fp = make_device()
    req = make_request(fp, label="box", salt=activation_salt(made["license_key"]))
    token = client.post(
        "/v1/activate", json={"license_key": made["license_key"], "request": req.to_json()}
    ).json()["license"]
    trust = trust_of(client, tmp_path)
    guard = Guard(
        token,
        trust,
        state_dir=tmp_path / "s",
        audience="acme/ocr",
        auto_heartbeat=False,
        source=StaticSource(list(fp.components), fp.environment),
    )
    # a list that revokes someone else changes nothing here
    client.post(f"/v1/licenses/{other['id']}/revoke")
    (tmp_path / "crl1.jwt").write_text(client.get("/v1/revocations").text)
    assert guard.import_revocations(tmp_path / "crl1.jwt") is False
    guard.check()
    # another vendor's list (a valid signature, by a key this Guard does not trust) is refused
    foreign = api.as_("b").get("/v1/revocations").text
    with pytest.raises(HeartbeatReplyError):
        guard.import_revocations(foreign)
    client = api.as_("a")
    client.post(f"/v1/licenses/{made['id']}/revoke")
    crl = client.get("/v1/revocations?days=3").text
    rl = verify_revocations(crl, trust, issuer="acme")
    assert {made["id"], other["id"]} <= rl.licenses
    assert rl.next_update - rl.issued_at == 3 * 86400
    assert guard.import_revocations(crl) is True
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "revoked"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v1/customers", {"name": "a\u0000b"}),
        ("post", "/v1/plans", {"name": "x\u0000", "days": 1}),
        ("get", "/v1/licenses/a%00b", None),
        ("get", "/v1/plans/x%00", None),
    ],
)
def test_nul_characters_are_a_4xx_on_every_database(
    api: Api, method: str, path: str, body: Any
) -> None:
    """Regression (found by schemathesis on PostgreSQL): text with NUL was a 500."""
    client = api.as_("a")
    resp = client.post(path, json=body) if method == "post" else client.get(path)
    assert 400 <= resp.status_code < 500, resp.text


def test_a_heartbeat_naming_a_nul_license_is_a_4xx(api: Api) -> None:
    """Regression: the heartbeat path answered 503 (a driver error) for a NUL in an id."""
    body = HeartbeatRequest(
        license_id="lic_\u0000", device_id="d", nonce=new_nonce(), time=0
    ).to_body()
    resp = api.client.post(
        "/v1/heartbeat",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": "Modelseal-Device x"},
    )
    assert resp.status_code == 422, resp.text
