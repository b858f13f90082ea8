"""The whole offline flow through the CLI on this machine, as the README shows it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

EXE = [sys.executable, "-m", "modelseal.cli"]


def ms(*args: str | Path, state: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    if state is not None:
        env["MODELSEAL_STATE_DIR"] = str(state)
    return subprocess.run(
        [*EXE, *map(str, args)], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, (r.args, r.stdout, r.stderr)
    return r


def test_vendor_and_device_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # undone after the test: later tests keep their cwd
    save_file({"w": np.arange(64, dtype=np.float32)}, "m.safetensors")
    ok(ms("keys", "generate", "--out-dir", "keys"))
    ok(ms("keys", "generate", "--out-dir", "other", "--alg", "sm2"))
    ok(
        ms(
            "seal",
            "m.safetensors",
            "--out",
            "m.mseal",
            "--new-key-out",
            "m.key",
            "--model-id",
            "acme/ocr",
        )
    )
    fp = json.loads(ok(ms("device", "fingerprint", "--json")).stdout)
    assert fp["components"]
    ok(ms("device", "request", "--out", "request.json", "--label", "ci box"))
    r = ok(
        ms(
            "license",
            "issue",
            "--signing-key",
            "keys/vendor.pem",
            "--request",
            "request.json",
            "--customer",
            "ACME",
            "--model",
            "m.mseal",
            "--content-key",
            "m.key",
            "--days",
            "365",
            "--features",
            "ocr,hd",
            "--max-calls",
            "100000",
            "--out",
            "license.jwt",
            "--json",
        )
    )
    issued = json.loads(r.stdout)
    assert issued["claims"]["entitlements"] == ["hd", "ocr"]
    assert "keys" not in issued["claims"]
    assert (tmp_path / "license.jwt.vendor.json").stat().st_mode & 0o777 == 0o600

    inspected = json.loads(ok(ms("license", "inspect", "license.jwt", "--json")).stdout)
    assert inspected["verified"] is False and inspected["claims"]["sub"] == "ACME"
    ok(
        ms(
            "license",
            "verify",
            "license.jwt",
            "--trust",
            "keys/vendor.pub",
            "--model",
            "m.mseal",
            "--device",
        )
    )

    # one exit code per failure class
    assert ms("license", "verify", "license.jwt", "--trust", "other/vendor.pub").returncode == 11
    token = (tmp_path / "license.jwt").read_text().strip()
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "Someone Else"  # well-formed claims under the old signature
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    (tmp_path / "forged.jwt").write_text(f"{head}.{forged_body}.{sig}")
    r = ms("license", "verify", "forged.jwt", "--trust", "keys/vendor.pub")
    assert r.returncode == 12, r.stderr  # LicenseSignatureError
    (tmp_path / "garbage.jwt").write_text("not a license")
    r = ms("license", "verify", "garbage.jwt", "--trust", "keys/vendor.pub")
    assert r.returncode == 10 and "Traceback" not in r.stderr
    ok(
        ms(
            "seal",
            "m.safetensors",
            "--out",
            "other.mseal",
            "--new-key-out",
            "o.key",
            "--model-id",
            "acme/other",
        )
    )
    r = ms(
        "license", "verify", "license.jwt", "--trust", "keys/vendor.pub", "--model", "other.mseal"
    )
    assert r.returncode == 14

    state = tmp_path / "state"
    status = json.loads(
        ok(
            ms(
                "guard",
                "status",
                "--license",
                "license.jwt",
                "--trust",
                "keys/vendor.pub",
                "--json",
                state=state,
            )
        ).stdout
    )
    assert status["licensed"] is True and status["calls_limit"] == 100000

    # the Python one-liner the README shows, on this machine's real fingerprint
    code = (
        "import modelseal, sys;"
        "t = modelseal.load('m.mseal', license='license.jwt', trust='keys/vendor.pub',"
        " framework='numpy', state_dir=sys.argv[1]);"
        "print(float(t['w'].sum()))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.strip()) == float(np.arange(64).sum())

    # emergency unlock: vendor issues a code, the device applies it once
    issued_code = json.loads(
        ok(
            ms(
                "license",
                "unlock-code",
                "--record",
                "license.jwt.vendor.json",
                "--serial",
                "1",
                "--json",
            )
        ).stdout
    )["code"]
    r = ok(
        ms(
            "guard",
            "unlock",
            issued_code,
            "--license",
            "license.jwt",
            "--trust",
            "keys/vendor.pub",
            state=state,
        )
    )
    assert "unlocked" in r.stdout
    r = ms(
        "guard",
        "unlock",
        issued_code,
        "--license",
        "license.jwt",
        "--trust",
        "keys/vendor.pub",
        state=state,
    )
    # docs/cli.md gives no exit code for a reused unlock code (it exits 1 today,
    # the "bug" code): the message is what this checks
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and "already used" in r.stderr

    logs = list(state.glob("*.audit.jsonl"))
    assert len(logs) == 1
    ok(ms("audit", "verify", logs[0]))
    lines = logs[0].read_text().splitlines()
    del lines[1]
    logs[0].write_text("\n".join(lines) + "\n")
    assert ms("audit", "verify", logs[0]).returncode == 4
