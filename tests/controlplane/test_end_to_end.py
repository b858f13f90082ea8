"""The issue's end-to-end flow with real processes and the real CLI, on loopback.

controlplane init -> plan -> customer -> model -> order -> device activate ->
the sealed model loads under the Guard with no key file -> heartbeats flow ->
revoke -> the Guard refuses within one heartbeat interval; and a copy of the
license on a machine with other components can neither load nor heartbeat.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelseal.crypto import ContentKey
from tests.controlplane.conftest import Server, run_cli

DEVICE_SCRIPT = """
import sys, time
from modelseal.guard import Guard, NotLicensedError
guard = Guard(sys.argv[1], sys.argv[2], audience="acme/ocr")
weights = guard.load(sys.argv[3], framework="numpy")
print("loaded", float(weights["w"].sum()), flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        guard.check()
        print("ok", flush=True)
    except NotLicensedError as exc:
        print("refused", exc.reason, flush=True)
        break
    time.sleep(0.2)
"""


def test_order_to_guarded_load_to_revocation(
    server: Server, sealed_model: tuple[Path, ContentKey, Path], tmp_path: Path
) -> None:
    model, _, key_file = sealed_model
    env = {"MODELSEAL_SERVER": server.url, "MODELSEAL_TOKEN_FILE": str(server.token_file)}

    def admin(*args: str) -> str:
        return run_cli("admin", *args, env=env).stdout

    plan = json.loads(
        admin(
            "plans",
            "create",
            "--name",
            "pro",
            "--days",
            "30",
            "--features",
            "ocr",
            "--max-devices",
            "2",
            "--heartbeat",
            "10s",
            "--grace",
            "1h",
            "--json",
        )
    )
    assert plan["heartbeat_interval"] == 10
    admin("customers", "create", "--name", "St. Mary")
    registered = json.loads(
        admin("models", "add", str(model), "--content-key", str(key_file), "--json")
    )
    made = json.loads(
        admin(
            "orders",
            "create",
            "--customer",
            "St. Mary",
            "--plan",
            "pro",
            "--model",
            registered["id"],
            "--json",
        )
    )
    license_key = made["license_key"]
    trust = tmp_path / "vendor.json"
    admin("keys", "export-trust", "--out", str(trust))

    # the device: the real fingerprint of this machine, no key file anywhere
    device_dir = tmp_path / "device"
    device_dir.mkdir()
    state = {"MODELSEAL_STATE_DIR": str(device_dir / "state")}
    run_cli(
        "device",
        "activate",
        "--server",
        server.url,
        "--key",
        license_key,
        "--out",
        str(device_dir / "license.jwt"),
        "--label",
        "ward-3",
        cwd=device_dir,
    )
    assert (device_dir / "license.jwt").stat().st_mode & 0o777 == 0o600
    again = run_cli(
        "device",
        "activate",
        "--server",
        server.url,
        "--key",
        license_key,
        "--out",
        str(device_dir / "license.jwt"),
        "--force",
        "--json",
    )
    assert json.loads(again.stdout)["reactivated"] is True  # a reinstall takes no new seat

    script = device_dir / "run.py"
    script.write_text(DEVICE_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(device_dir / "license.jwt"), str(trust), str(model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **state},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("loaded 66.0"), first + proc.stderr.read() if proc.stderr else ""
        # heartbeats flow: the server sees the device
        deadline = time.monotonic() + 15
        seen = None
        while time.monotonic() < deadline and not seen:
            devices = json.loads(admin("devices", "list", "--json"))
            seen = devices[0]["last_seen"] if devices else None
            time.sleep(0.3)
        assert seen is not None, "no heartbeat reached the server"
        assert json.loads(admin("licenses", "list", "--json"))[0]["devices"] == 1

        admin("licenses", "revoke", made["license_id"])
        revoked_at = time.monotonic()
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("refused"):
                break
        elapsed = time.monotonic() - revoked_at
        assert lines and lines[-1].strip() == "refused revoked", lines[-3:]
        assert elapsed <= 10 * 1.1 + 2, elapsed  # one interval (+ jitter, + a check's sleep)
    finally:
        proc.kill()
        proc.wait(10)


def test_a_copied_license_neither_loads_nor_heartbeats(
    server: Server, sealed_model: tuple[Path, ContentKey, Path], tmp_path: Path
) -> None:
    from modelseal._http import ServerAuthError
    from modelseal.device import StaticSource, make_request
    from modelseal.guard import Guard, NotLicensedError
    from modelseal.guard.core import HeartbeatReport
    from modelseal.guard.heartbeat import HttpHeartbeatClient
    from modelseal.license import read_unverified
    from modelseal.license.licensekey import activation_salt
    from tests.controlplane.conftest import catalog, order, trust_of
    from tests.license.conftest import make_device

    model, content_key, _ = sealed_model
    with server.client() as client:
        ids = catalog(client, content_key, heartbeat=10)
        key = order(client, ids)["license_key"]
        request = make_request(make_device(), label="original", salt=activation_salt(key))
        token = client.post(
            "/v1/activate", json={"license_key": key, "request": request.to_json()}
        ).json()["license"]
        trust = trust_of(client, tmp_path)
    other = make_device(
        {
            "dmi.product_uuid": "11111111-2222-3333-4444-555555555555",
            "disk.root_serial": "OTHER-DISK",
            "net.mac": "52:54:00:aa:bb:cc",
        }
    )
    with pytest.raises(NotLicensedError) as info:
        Guard(
            token,
            trust,
            state_dir=tmp_path / "s",
            audience="acme/ocr",
            auto_heartbeat=False,
            source=StaticSource(list(other.components), other.environment),
        ).load(model)
    assert info.value.reason == "wrong_device"
    # the copy cannot compute the device credential: whatever it sends is refused
    _, claims = read_unverified(token)
    report = HeartbeatReport(
        license_id=claims["jti"],
        device_id=claims["device"]["device_id"],
        calls_reserved=0,
        time=time.time(),
        audit_head=None,
        nonce="AAAAAAAAAAAAAAAAAAAAAA",
        credential=secrets.token_bytes(32),
    )
    with pytest.raises(ServerAuthError):
        HttpHeartbeatClient(claims["heartbeat"]["url"]).send(report)
    # while the real device can: the same license under its own components opens
    real = Guard(
        token,
        trust,
        state_dir=tmp_path / "r",
        audience="acme/ocr",
        auto_heartbeat=False,
        source=StaticSource(list(make_device().components), make_device().environment),
    )
    assert float(real.load(model, framework="numpy")["w"].sum()) == 66.0
