"""Server-side quotas with real processes: a server, the admin CLI, a Guard leasing over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelseal.cli import _common
from modelseal.cli.admin import app as admin_app
from modelseal.crypto import ContentKey
from tests.controlplane.conftest import Server, trust_of


def test_a_guard_spends_leases_the_server_grants_and_no_more(
    server: Server,
    sealed_model: tuple[Path, ContentKey, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_common, "json_mode", False)
    from modelseal.device import StaticSource, make_request
    from modelseal.guard import Guard, NotLicensedError
    from modelseal.guard.heartbeat import HttpHeartbeatClient
    from modelseal.license.licensekey import activation_salt
    from tests.license.conftest import make_device

    model, _, key_file = sealed_model
    env = {"MODELSEAL_SERVER": server.url, "MODELSEAL_TOKEN_FILE": str(server.token_file)}

    def admin(*args: str) -> str:
        # in-process (a subprocess costs seconds on a loaded machine); the server is real
        result = CliRunner().invoke(admin_app, list(args), env={"COLUMNS": "200", **env})
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == 0, result.stderr
        return result.stdout

    plan = json.loads(
        admin(
            "plans",
            "create",
            "--name",
            "metered",
            "--days",
            "30",
            "--max-calls",
            "30",
            "--offline-calls",
            "4",
            "--heartbeat",
            "10s",
            "--grace",
            "1h",
            "--json",
        )
    )
    assert plan["offline_calls"] == 4
    assert (
        json.loads(admin("plans", "set-max-devices", "metered", "3", "--json"))["max_devices"] == 3
    )
    unlimited = admin("plans", "set-max-devices", "metered", "unlimited", "--json")
    assert json.loads(unlimited)["max_devices"] is None
    admin("customers", "create", "--name", "Clinic")
    registered = json.loads(
        admin("models", "add", str(model), "--content-key", str(key_file), "--json")
    )
    made = json.loads(
        admin(
            "orders",
            "create",
            "--customer",
            "Clinic",
            "--plan",
            "metered",
            "--model",
            registered["id"],
            "--json",
        )
    )
    fp = make_device()
    request = make_request(fp, label="scanner", salt=activation_salt(made["license_key"]))
    with server.client() as client:
        activated = client.post(
            "/v1/activate", json={"license_key": made["license_key"], "request": request.to_json()}
        ).json()
        trust = trust_of(client, tmp_path)
    guard = Guard(
        activated["license"],
        trust,
        state_dir=tmp_path / "state",
        audience="acme/ocr",
        source=StaticSource(list(fp.components), fp.environment),
        heartbeat=HttpHeartbeatClient(f"{server.url}/v1/heartbeat"),
        reserve_calls=1,
        lease_calls=10,
    )

    def spend(n: int) -> int:
        done = 0
        for _ in range(n):
            try:
                guard.check()
            except NotLicensedError:
                break
            done += 1
        return done

    spent = spend(100)  # before any beat: the offline allowance
    assert spent == 4
    for _ in range(5):
        verdict = guard.heartbeat_now()
        spent += spend(100)
    assert verdict.code == "QUOTA_EXCEEDED"
    assert spent <= 30 + 4  # the quota, plus one offline allowance at most
    assert spent >= 30
    usage = json.loads(admin("customers", "usage", "Clinic", "--json"))
    assert usage["by_license"][0]["max_calls"] == 30
    assert 30 <= usage["calls_leased"] <= 34
    table = admin("customers", "usage", "Clinic")
    assert "calls_leased" in table and "total" in table

    # suspension of the one device is persisted on the server and delivered
    device = activated["device"]
    assert json.loads(admin("devices", "suspend", device, "--json"))["status"] == "suspended"
    assert guard.heartbeat_now().code == "SUSPENDED"
    with pytest.raises(NotLicensedError) as info:
        guard.check(feature="ocr")
    assert info.value.reason == "suspended"
    shown = json.loads(admin("devices", "show", device, "--json"))
    assert shown["status"] == "suspended" and shown["lease_end"] >= 26
    admin("devices", "reinstate", device)
    assert guard.heartbeat_now().code in ("VALID", "QUOTA_EXCEEDED")
    guard.close()
