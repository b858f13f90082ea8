"""The console without a browser: headers, CSRF, roles, bad input, the asset banner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelseal.crypto import ContentKey
from tests.console.conftest import ConsoleApp, ConsoleUser, csrf_of

PAGES = [
    "/console/",
    "/console/customers",
    "/console/plans",
    "/console/models",
    "/console/orders",
    "/console/licenses",
    "/console/devices",
    "/console/activate",
    "/console/audit",
    "/console/reports",
    "/console/platform/vendors",
    "/console/platform/models",
    "/console/platform/documents",
    "/console/platform/configs",
    "/console/platform/images",
    "/console/platform/deploy",
    "/console/platform/deployments",
    "/console/platform/routes",
    "/console/platform/api-keys",
]
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _headers_ok(resp: object) -> None:
    headers = resp.headers  # type: ignore[attr-defined]
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def _customers(owner: ConsoleUser) -> list[str]:
    import re

    return re.findall(
        r'/console/licenses\?customer=[^"]+">([^<]+)<', owner.client.get("/console/customers").text
    )


def test_every_page_renders_with_the_security_headers(console: ConsoleApp) -> None:
    owner = console.user("olga", "owner")
    for path in [*PAGES, "/console/webhooks"]:
        resp = owner.client.get(path)
        assert resp.status_code == 200, (path, resp.text[:500])
        _headers_ok(resp)
        assert resp.headers["cache-control"].startswith("no-store")
        # no inline script, style or handler anywhere (the CSP would block them)
        body = resp.text
        assert "<style" not in body and " style=" not in body and " onclick=" not in body
        for tag in body.split("<script")[1:]:
            assert 'src="/console/static/' in tag.split(">")[0] or (
                'type="application/json"' in tag.split(">")[0]
            ), tag[:120]
    # static files and redirects carry the headers too; the login page for a stranger
    static = owner.client.get("/console/static/console.css")
    assert static.status_code == 200
    _headers_ok(static)
    anon = console.client().get("/console/licenses")
    assert anon.status_code == 303 and anon.headers["location"] == "/console/login"
    _headers_ok(anon)
    # the API is untouched, and the console is not in the OpenAPI document
    assert "content-security-policy" not in owner.client.get("/healthz").headers
    paths = console.client().get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]


def test_state_changes_need_the_csrf_token(console: ConsoleApp) -> None:
    owner = console.user("olga", "owner")
    other = console.user("oscar", "owner")  # another session's token is no good either
    for data in ({}, {"csrf": "forged"}, {"csrf": owner.csrf + "x"}, {"csrf": other.csrf}):
        resp = owner.client.post("/console/customers", data={"name": "Mallory", **data})
        assert resp.status_code == 403, resp.text
        assert "security token" in resp.text
        _headers_ok(resp)
    assert _customers(owner) == []
    # htmx's header is the other accepted carrier
    made = owner.client.post(
        "/console/customers",
        data={"name": "Acme Clinic"},
        headers={"X-CSRF-Token": owner.csrf},
        follow_redirects=True,
    )
    assert made.status_code == 200 and "Customer added." in made.text
    assert _customers(owner) == ["Acme Clinic"]
    # logout is a state change too; the login form has its own (pre-session) token
    assert owner.client.post("/console/logout").status_code == 403
    login = console.client().post(
        "/console/login", data={"vendor": "acme", "username": "olga", "password": "x" * 12}
    )
    assert login.status_code == 403
    assert owner.post("/console/logout").status_code == 303
    assert owner.client.get("/console/").status_code == 303


def test_roles_are_the_apis(console: ConsoleApp) -> None:
    owner = console.user("olga", "owner")
    auditor = console.user("audrey", "auditor")
    added = owner.post("/console/customers", {"name": "Acme Clinic"}, follow_redirects=True)
    assert added.status_code == 200
    page = auditor.client.get("/console/customers")
    assert page.status_code == 200 and "Acme Clinic" in page.text
    assert 'action="/console/customers"' not in page.text  # no form offered
    for path, data in [
        ("/console/customers", {"name": "Sneaky"}),
        ("/console/plans", {"name": "free"}),
        ("/console/orders", {"customer": "Acme Clinic", "plan": "x", "models": "y"}),
        ("/console/platform/vendors", {"name": "V"}),
        ("/console/platform/api-keys", {"name": "k"}),
        ("/console/platform/gateway-key", {}),
    ]:
        resp = auditor.post(path, data)
        assert resp.status_code == 403, (path, resp.text[:300])
        assert "auditor role cannot" in resp.text
    assert _customers(owner) == ["Acme Clinic"]
    # webhooks are the owner's, as in the API
    assert auditor.client.get("/console/webhooks").status_code == 403
    issuer = console.user("ivan", "issuer")
    assert issuer.client.get("/console/webhooks").status_code == 403
    made = issuer.post("/console/plans", {"name": "basic", "days": "30"}, follow_redirects=True)
    assert made.status_code == 200 and "Plan added." in made.text


GARBAGE = [
    ("/console/plans", {"name": "p", "days": "thirty"}),
    ("/console/plans", {"name": "", "kind": "forever"}),
    ("/console/plans", {"name": "x" * 5000, "max_devices": "-1"}),
    ("/console/customers", {"name": "\x00"}),
    ("/console/models", {"model_id": "m", "key_id": "k", "content_key": "not base64"}),
    ("/console/orders", {"customer": "nobody", "plan": "none", "models": "mdl_x"}),
    ("/console/orders", {}),
    ("/console/orders", {"customer": "c", "plan": "p", "models": "m", "order_token": "a b"}),
    ("/console/licenses/lic_nope/renew", {"days": "-5"}),
    ("/console/licenses/lic_nope/explode", {}),
    ("/console/licenses/lic_nope/revoke", {}),
    ("/console/devices/dev_nope/suspend", {}),
    ("/console/devices/dev_nope/unlock", {"reason": "r", "totp": "12"}),
    ("/console/devices/dev_nope/unlock", {"reason": "lost", "totp": "123456"}),
    ("/console/activate", {"license": "lic_nope", "request_text": "{not json"}),
    ("/console/activate", {}),
    ("/console/webhooks", {"url": "ftp://x", "events": ""}),
    ("/console/webhooks/wh_nope/messages/m/redeliver", {}),
    ("/console/platform/models", {"vendor": "nobody", "name": "m", "version": "!!"}),
    ("/console/platform/configs", {"name": "c", "spec_text": "{{{ not yaml"}),
    ("/console/platform/configs", {"name": "c", "spec_text": "apiVersion: nope"}),
    ("/console/platform/images", {"name": "i", "address": "a b", "digest": "md5:1"}),
    ("/console/platform/routes", {"id": "UPPER", "prefix": "x", "forward_url": "ftp://"}),
    ("/console/platform/api-keys", {"name": "k", "routes": "nope", "rate_limit": "lots"}),
    ("/console/platform/documents/upload", {"model": "nope", "kind": "design"}),
    ("/console/platform/deploy", {"config": "nope", "license_text": "x"}),
    ("/console/platform/deploy", {"spec_text": "kind: x", "license_text": ""}),
    ("/console/platform/nothing", {}),
    ("/console/platform/vendors/nope/delete", {}),
    ("/console/platform/deployments/nope/delete", {}),
    ("/console/platform/models/nope/versions", {"version": "1"}),
]


@pytest.mark.parametrize(
    "path",
    [
        "/console/licenses/lic_nope",
        "/console/devices/dev_nope",
        "/console/webhooks/wh_nope",
        "/console/nowhere",
        "/console/platform/deployments/dep_nope",
        "/console/platform/deploy?config=nope",
        "/console/platform/documents/doc_nope/content",
        "/console/reports/nope.csv",
        "/console/audit?after=x",
        "/console/devices/dev_nope/secret.yaml?namespace=BAD_",
    ],
)
def test_unknown_things_are_pages_not_500s(console: ConsoleApp, path: str) -> None:
    owner = console.user("olga", "owner")
    resp = owner.client.get(path)
    assert 200 <= resp.status_code < 500, resp.text[:300]
    assert resp.headers["content-type"].startswith("text/html")


def test_bad_form_input_comes_back_with_a_message(console: ConsoleApp) -> None:
    owner = console.user("olga", "owner")
    for path, data in GARBAGE:
        resp = owner.post(path, data)
        assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text[:300])
        assert resp.headers["content-type"].startswith("text/html"), path
        assert 'class="error"' in resp.text, (path, resp.text[:500])
    # the form comes back filled in, secrets excepted
    again = owner.post("/console/plans", {"name": "gold", "days": "thirty", "max_calls": "9"})
    assert 'name="name" type="text" value="gold"' in again.text
    assert 'name="days" type="number" value="thirty"' in again.text
    assert "must be a whole number" in again.text
    login = owner.client.get("/console/login")
    refused = console.client().post(
        "/console/login",
        data={"csrf": csrf_of(login.text), "vendor": "acme", "username": "olga", "password": "p"},
        cookies=dict(login.cookies),
    )
    assert refused.status_code == 401 and 'value="olga"' in refused.text
    assert 'value="p"' not in refused.text
    # a broken multipart body is a 400 page too
    broken = owner.client.post(
        "/console/activate",
        content=b'--zz\r\nContent-Disposition: form-data; name="csrf"\r\n\r\nx',
        headers={"Content-Type": "multipart/form-data; boundary=zz"},
    )
    assert 400 <= broken.status_code < 500
    # nothing half-written: no plan, model, order, vendor or config came of it
    for page in ("/console/plans", "/console/platform/configs", "/console/platform/images"):
        assert "No " in owner.client.get(page).text


def _shipped_refusals(console: ConsoleApp, device: str, reasons: list[str]) -> None:
    """Refusal records as the heartbeat path stores them (tests/controlplane cover the
    shipping itself), plus one older than the dashboard's window."""
    import time

    from modelseal.controlplane.models import Device, DeviceEvent
    from modelseal.controlplane.services.reports import REFUSAL_EVENT

    now = int(time.time())
    with console.app.state.cp.sessions() as session, session.begin():
        row = session.get(Device, device)
        assert row is not None
        ages = [60] * len(reasons) + [8 * 86400]
        for seq, (reason, age) in enumerate(zip([*reasons, "OLD"], ages, strict=True)):
            session.add(
                DeviceEvent(
                    vendor_id=row.vendor_id,
                    license_id=row.license_id,
                    device_id=row.id,
                    seq=seq,
                    ts=str(now - age),
                    at=now - age,
                    event=REFUSAL_EVENT,
                    reason=reason,
                    data={},
                    hash=f"{seq:064x}",
                )
            )


def test_licensing_round_trip_and_dashboard_figures(console: ConsoleApp, tmp_path: Path) -> None:
    from tests.controlplane.conftest import fake_request

    owner = console.user("olga", "owner")
    key = ContentKey.generate()
    # each accepted form is answered with a redirect (a reload changes nothing)
    added = owner.post("/console/customers", {"name": "Acme Clinic"})
    assert added.status_code == 303
    assert added.headers["location"] == "/console/customers?done=customer-added"
    assert "Customer added." in owner.client.get(added.headers["location"]).text
    plan = {"name": "pro", "days": "3", "max_devices": "2"}
    assert owner.post("/console/plans", plan, follow_redirects=True).status_code == 200
    jwk = json.dumps(key.to_jwk()).encode()
    made = owner.post(
        "/console/models",
        {"model_id": "acme/ocr"},
        files={"key_file": ("m.key", jwk, "application/json")},
        follow_redirects=True,
    )
    assert "Model registered." in made.text, made.text
    import re

    form = owner.client.get("/console/orders").text
    model_id = re.search(r'value="(mdl_[^"]+)"', form)
    token = re.search(r'name="order_token" value="([^"]+)"', form)
    assert model_id and token
    order = {
        "customer": "Acme Clinic",
        "plan": "pro",
        "models": model_id.group(1),
        "order_token": token.group(1),
    }
    posted = owner.post("/console/orders", order)
    # Post/Redirect/Get: the answer is a redirect, so a reload re-posts nothing
    assert posted.status_code == 303, posted.text
    where = posted.headers["location"]
    assert re.fullmatch(r"/console/licenses/lic_[A-Za-z0-9_-]+\?done=issued", where), where
    # the same form sent again (a double click, a resubmission) is the same order
    again = owner.post("/console/orders", order)
    assert again.status_code == 303 and again.headers["location"] == where
    issued = owner.client.get(where)
    assert issued.status_code == 200 and "License issued." in issued.text, issued.text
    assert "License issued." not in owner.client.get(where.split("?")[0]).text
    lic = re.search(r"License (lic_[A-Za-z0-9_-]+)", issued.text).group(1)  # type: ignore[union-attr]
    license_key = re.search(r'id="license-key">([^<]+)<', issued.text).group(1)  # type: ignore[union-attr]
    home = owner.client.get("/console/")
    assert 'id="n-licenses">1<' in home.text and 'id="n-devices">0<' in home.text
    # offline activation with an uploaded request file
    request_file = json.dumps(fake_request(license_key, seed=3).to_json()).encode()
    act = owner.post(
        "/console/activate",
        {"license": lic},
        files={"request": ("request.json", request_file, "application/json")},
    )
    assert act.status_code == 200 and "Device activated." in act.text, act.text
    device = re.search(r"/console/devices/(dev_[A-Za-z0-9_-]+)/license.jwt", act.text).group(1)  # type: ignore[union-attr]
    jwt = owner.client.get(f"/console/devices/{device}/license.jwt")
    assert jwt.status_code == 200 and jwt.text.count(".") == 2
    assert "attachment" in jwt.headers["content-disposition"]
    secret = owner.client.get(f"/console/devices/{device}/secret.yaml?namespace=inference")
    assert secret.status_code == 200 and "kind: Secret" in secret.text
    assert "namespace: inference" in secret.text
    home = owner.client.get("/console/")
    assert 'id="n-devices">1<' in home.text
    figures = owner.client.get("/console/dashboard.json").json()
    assert figures["licenses_by_status"] == {"active": 1}
    assert sum(figures["activations"]["values"]) == 1
    assert [r["license"] for r in figures["expiring"]] == [lic]
    assert figures["refusals"] == []
    assert "No refusals shipped by devices" in home.text
    _shipped_refusals(console, device, ["DEVICE_MISMATCH", "FEATURE_NOT_LICENSED"] * 2 + ["X"])
    figures = owner.client.get("/console/dashboard.json").json()
    # most frequent first, ties by code; the 8-day-old one is outside the window
    assert figures["refusals"] == [
        {"reason": "DEVICE_MISMATCH", "refusals": 2},
        {"reason": "FEATURE_NOT_LICENSED", "refusals": 2},
        {"reason": "X", "refusals": 1},
    ]
    home = owner.client.get("/console/")
    assert 'data-reason="DEVICE_MISMATCH">2<' in home.text
    # an unlock code with a reason and a fresh TOTP code
    unlocked = owner.post(
        f"/console/devices/{device}/unlock", {"reason": "lost the network", "totp": owner.code()}
    )
    assert unlocked.status_code == 200 and 'id="unlock-code"' in unlocked.text, unlocked.text
    # suspend, renew, revoke: the page says so, the status follows
    suspended = owner.post(f"/console/licenses/{lic}/suspend", follow_redirects=True)
    assert "suspended" in suspended.text
    renewed = owner.post(f"/console/licenses/{lic}/renew", {"days": "30"})
    assert renewed.status_code == 303, renewed.text
    expires = re.compile(r'id="license-expires">([^<]*)<')
    first = owner.client.get(renewed.headers["location"])
    assert "Done: renew." in first.text
    # a reload is a GET of the license: it does not renew a second time
    again = owner.client.get(renewed.headers["location"])
    assert expires.search(again.text) and (
        expires.search(again.text).group(1) == expires.search(first.text).group(1)  # type: ignore[union-attr]
    )
    revoked = owner.post(f"/console/licenses/{lic}/revoke", follow_redirects=True)
    assert 'id="license-status">revoked' in revoked.text
    # the unlock code needs a fresh TOTP code: a wrong one is refused and audited
    wrong = owner.post(f"/console/devices/{device}/unlock", {"reason": "lost", "totp": "000000"})
    assert wrong.status_code in (403, 409), wrong.text
    audit = owner.client.get("/console/audit?event=user.auth_failed")
    assert "totp" in audit.text
    verdict = owner.client.get("/console/audit/verify", headers={"HX-Request": "true"})
    assert 'id="chain-ok"' in verdict.text
    report = owner.client.get("/console/reports/licenses.csv")
    assert report.status_code == 200 and report.text.startswith("plan,status")


def test_missing_assets_are_named_with_the_set_up_command(
    console: ConsoleApp, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from modelseal.controlplane.console import web

    owner = console.user("olga", "owner")
    monkeypatch.setattr(web, "STATIC", tmp_path / "empty")
    web.missing_assets.cache_clear()
    try:
        page = owner.client.get("/console/")
        assert page.status_code == 200
        assert "bash scripts/console-assets.sh" in page.text
        assert "vendor/htmx.min.js" not in page.text
    finally:
        monkeypatch.undo()
        web.missing_assets.cache_clear()
    assert "bash scripts/console-assets.sh" not in owner.client.get("/console/").text


def test_documents_up_to_the_document_limit_upload_through_the_console(
    console: ConsoleApp,
) -> None:
    """The console's document form takes what the API takes (16 MiB), not the 1 MiB form limit."""
    from tests.controlplane.platform.test_api import P, _vendor_and_model

    api = console.client()
    api.headers["Authorization"] = f"Bearer {console.owner_token}"
    _vendor_and_model(api)
    owner = console.user("olga", "owner")
    data = b"%PDF-1.7\n" + bytes(3 << 20)
    resp = owner.post(
        "/console/platform/documents/upload",
        {"model": "demo", "kind": "design"},
        files={"file": ("design.pdf", data, "application/pdf")},
    )
    assert resp.status_code == 200, resp.text[:500]
    assert "Document stored." in resp.text
    docs = api.get(f"{P}/documents", params={"model": "demo"}).json()
    assert [d["size"] for d in docs] == [len(data)]
    # over the document limit: refused before the body is read
    too_big = owner.post(
        "/console/platform/documents/upload",
        {"model": "demo", "kind": "design"},
        files={"file": ("big.pdf", bytes((16 << 20) + (64 << 10)), "application/pdf")},
    )
    assert too_big.status_code == 413
