"""Emergency unlock codes through the server: a person with a fresh TOTP code and a reason."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pyotp

from modelseal.crypto import ContentKey
from modelseal.guard.unlock import verify_unlock_code
from modelseal.license import read_unverified
from tests.controlplane.conftest import (
    Api,
    catalog,
    db_args,
    fake_request,
    free_port,
    order,
    run_cli,
    start_server,
)
from tests.controlplane.test_people import make_person


def _device(client) -> tuple[dict, dict]:  # type: ignore[no-untyped-def,type-arg]
    ids = catalog(client, ContentKey.generate())
    made = order(client, ids)
    key = made["license_key"]
    act = client.post(
        "/v1/activate", json={"license_key": key, "request": fake_request(key, seed=5).to_json()}
    )
    assert act.status_code == 201, act.text
    return made, act.json()


def test_unlock_code_needs_a_person_a_fresh_totp_and_is_audited(api: Api) -> None:
    owner = api.as_("a")
    made, act = _device(owner)
    url = f"/v1/devices/{act['device']}/unlock-code"
    body = {"license": made["id"], "reason": "clock reset after a BIOS update, ticket 4711"}
    # a token alone, even the owner's, is refused
    alone = owner.post(url, json=body | {"totp": "123456"})
    assert alone.status_code == 403 and alone.json()["error"]["code"] == "mfa_required"
    # no TOTP code at all is not even a request
    assert owner.post(url, json=body).status_code == 422

    ivy = make_person(api, "ivy", "issuer")
    tok = ivy.post("/v1/session/tokens", json={"name": "cli"}).json()["token"]
    personal = {"Authorization": f"Bearer {tok}"}
    wrong = api.client.post(url, json=body | {"totp": "999999"}, headers=personal)
    if ivy.totp.verify("999999", valid_window=1):  # 3 in a million: pick another
        wrong = api.client.post(url, json=body | {"totp": "999998"}, headers=personal)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "totp_invalid"
    # a code already used (at enrolment) is not fresh
    used = ivy.totp.at(ivy.enrolled_at)
    stale = api.client.post(url, json=body | {"totp": used}, headers=personal)
    assert stale.status_code == 403
    fresh = ivy.code(1)
    ok = api.client.post(url, json=body | {"totp": fresh}, headers=personal)
    assert ok.status_code == 201, ok.text
    out = ok.json()
    assert out["serial"] == 0 and out["device"] == act["device"]
    # the code is one the device accepts: checked against the verifiers its license carries
    claims = read_unverified(act["license"])[1]
    grant = verify_unlock_code(
        out["code"],
        license_id=made["id"],
        device_id=act["device_id"],
        verifiers=claims["unlock"]["verifiers"],
        grant_hours=claims["unlock"]["hours"],
        used_serials=(),
    )
    assert grant.serial == 0 and out["grant_hours"] == claims["unlock"]["hours"]
    assert out["remaining"] == len(claims["unlock"]["verifiers"]) - 1
    # the same TOTP code twice: refused (replay), nothing issued
    again = api.client.post(url, json=body | {"totp": fresh}, headers=personal)
    assert again.status_code == 403
    # an auditor person cannot, whatever the code
    una = make_person(api, "una", "auditor")
    assert una.post(url, json=body | {"totp": una.code(1)}).status_code == 403
    # the device must belong to the license named
    other, _ = _device(owner)
    mismatch = api.client.post(
        url, json=body | {"license": other["id"], "totp": una.code(1)}, headers=personal
    )
    assert mismatch.status_code == 409
    # a session (with its CSRF token) works like the personal token
    jo = make_person(api, "jo", "owner")
    second = jo.post(url, json=body | {"totp": jo.code(1)})
    assert second.status_code == 201, second.text
    assert second.json()["serial"] == 1

    records = owner.get("/v1/audit", params={"event": "unlock.", "limit": 1000}).json()
    issued = [r for r in records if r["event"] == "unlock.issued"]
    refused = [r for r in records if r["event"] == "unlock.refused"]
    assert [r["data"]["serial"] for r in issued] == [0, 1]
    first = issued[0]
    assert first["reason"] == body["reason"]
    assert first["data"]["totp_verified"] is True and first["data"]["username"] == "ivy"
    assert first["data"]["actor"]["user"] == ivy.user_id
    assert first["data"]["target"]["license"] == made["id"]
    assert out["code"] not in json.dumps(records)  # the code itself is not logged
    assert {r["data"]["why"] for r in refused} >= {"mfa_required", "totp_invalid"}
    assert all(r["reason"] == body["reason"] for r in refused)
    assert owner.get("/v1/audit/verify").json()["ok"] is True


def test_init_creates_the_first_owner_and_the_cli_issues_an_unlock_code(
    tmp_path: Path, database_url: str | None
) -> None:
    data_dir = tmp_path / "cp"
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    init = run_cli(
        "controlplane",
        "init",
        *db_args(data_dir, database_url),
        "--vendor",
        "acme",
        "--token-out",
        str(tmp_path / "owner.token"),
        "--admin-user",
        "root",
        "--admin-password-file",
        str(pw),
    )
    assert "correct horse" not in init.stdout
    port = free_port()
    proc = start_server(data_dir, database_url, port=port)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            login = c.post(
                "/v1/session",
                json={
                    "vendor": "acme",
                    "username": "root",
                    "password": "correct horse battery staple",
                },
            )
            assert login.status_code == 200, login.text
            assert login.json()["user"]["role"] == "owner"
            csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
            secret = c.post("/v1/session/totp", headers=csrf).json()["secret"]
            totp = pyotp.TOTP(secret)
            assert (
                c.post(
                    "/v1/session/totp/confirm", json={"code": totp.now()}, headers=csrf
                ).status_code
                == 200
            )
            personal = c.post("/v1/session/tokens", json={"name": "laptop"}, headers=csrf)
            assert personal.status_code == 201
            (tmp_path / "me.token").write_text(personal.json()["token"])
            made, act = _device(
                httpx.Client(
                    base_url=base,
                    timeout=30,
                    headers={
                        "Authorization": "Bearer " + (tmp_path / "owner.token").read_text().strip()
                    },
                )
            )
        admin = ["admin", "--server", base]
        args = [
            "licenses",
            "unlock-code",
            "--license",
            made["id"],
            "--device",
            act["device"],
            "--reason",
            "operator locked out",
        ]
        # the service token from init cannot (exit 22), the person's token with TOTP can
        service = run_cli(
            *admin,
            "--token-file",
            str(tmp_path / "owner.token"),
            *args,
            "--totp",
            totp.at(time.time() + 30),
            check=False,
        )
        assert service.returncode == 22, service.stderr
        assert service.stderr.count("\n") == 1
        me = [*admin, "--token-file", str(tmp_path / "me.token")]
        bad = run_cli(*me, *args, "--totp", "12345", check=False)
        assert bad.returncode == 2
        issued = run_cli(*me, *args, "--totp", totp.at(time.time() + 30), "--json")
        data = json.loads(issued.stdout)
        assert data["serial"] == 0 and len(data["code"].replace("-", "")) == 25
        listed = json.loads(run_cli(*me, "audit", "list", "--event", "unlock.", "--json").stdout)
        assert [r["event"] for r in listed] == ["unlock.refused", "unlock.issued"]
        first = json.loads(run_cli(*me, "audit", "list", "--limit", "5", "--json").stdout)
        assert first[0]["event"] == "vendor.created"
        assert first[0]["data"]["actor"] == {"kind": "system", "command": "controlplane init"}
        assert "user.created" in [r["event"] for r in first]
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_an_unlock_request_refused_for_the_role_is_audited(api: Api) -> None:
    """Red team #12, finding 8: the role check answered 403 before the unlock service ran,
    so an auditor asking for an emergency unlock code left no trace."""
    owner = api.as_("a")
    _, act = _device(owner)
    url = f"/v1/devices/{act['device']}/unlock-code"
    body = {"reason": "please unlock, ticket 99", "totp": "123456"}
    una = make_person(api, "una", "auditor")
    refused = una.post(url, json=body | {"totp": una.code(1)})
    assert refused.status_code == 403, refused.text
    # a service token of the auditor role too, even with a body that is not valid
    aud = owner.post("/v1/tokens", json={"name": "aud", "role": "auditor"}).json()
    by_token = api.client.post(url, json={}, headers={"Authorization": f"Bearer {aud['token']}"})
    assert by_token.status_code == 403
    records = api.as_("a").get("/v1/audit", params={"event": "unlock.", "limit": 1000}).json()
    assert [(r["event"], r["data"]["why"], r["reason"]) for r in records] == [
        ("unlock.refused", "forbidden", body["reason"]),
        ("unlock.refused", "forbidden", None),
    ]
    first, second = records
    assert first["data"]["actor"]["user"] == una.user_id
    assert first["data"]["target"] == {"kind": "device", "id": act["device"]}
    assert second["data"]["actor"]["token"] == aud["id"]
    assert owner.get("/v1/audit/verify").json()["ok"] is True
