"""``modelseal guard import-revocations``: an air-gapped device takes a signed list from a file."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelseal.cli import _common
from modelseal.cli.guard import app as guard_app
from modelseal.crypto import ContentKey, generate_private_key
from modelseal.device import collect, make_request
from modelseal.license import issue_license
from modelseal.license.heartbeat import RevocationList, sign_revocations

runner = CliRunner()


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    # _common.json_mode is process-wide and only main() resets it
    monkeypatch.setattr(_common, "json_mode", False)


def ms(*args: str | Path, state: Path) -> subprocess.CompletedProcess[str]:
    """``modelseal guard ...`` in-process (a subprocess costs seconds on a loaded machine)."""
    assert args[0] == "guard"
    result = runner.invoke(
        guard_app,
        [*map(str, args[1:])],
        env={"COLUMNS": "200", "MODELSEAL_STATE_DIR": str(state)},
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_import_revocations_from_a_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    vendor = generate_private_key("ed25519")
    (tmp_path / "vendor.pub").write_bytes(vendor.public_key().to_pem())
    # a license bound to this machine (the CLI's Guard reads the real fingerprint)
    request = make_request(collect(), label="site")
    issued = issue_license(
        signing_key=vendor,
        issuer="acme",
        customer="site",
        audience=["acme/ocr"],
        request=request,
        content_keys=[(ContentKey.generate(), "acme/ocr")],
        valid_for=timedelta(days=30),
        license_id="lic_airgapped01",
    )
    (tmp_path / "license.jwt").write_text(issued.token)
    common = ["--license", tmp_path / "license.jwt", "--trust", tmp_path / "vendor.pub"]
    device_id = issued.claims.device.device_id  # type: ignore[union-attr]

    def crl(path: str, issued_at: int, licenses: set[str], devices: set[tuple[str, str]]) -> Path:
        rl = RevocationList(
            issuer="acme",
            issued_at=issued_at,
            next_update=issued_at + 86400,
            licenses=frozenset(licenses),
            devices=frozenset(devices),
        )
        (tmp_path / path).write_text(sign_revocations(rl, vendor) + "\n")
        return tmp_path / path

    now = int(time.time())
    other = crl("other.jwt", now, {"lic_someone_else"}, set())
    r = ms("guard", "import-revocations", other, *common, "--json", state=state)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["revoked"] is False
    status = ms("guard", "status", *common, "--json", state=state)
    assert status.returncode == 0 and json.loads(status.stdout)["revocations_issued_at"]

    # an older list than the one imported: refused, typed, one line
    older = crl("older.jwt", now - 3600, {"lic_airgapped01"}, set())
    r = ms("guard", "import-revocations", older, *common, state=state)
    assert r.returncode == 4 and "older" in r.stderr and "Traceback" not in r.stderr
    assert ms("guard", "status", *common, state=state).returncode == 0

    # a list signed by someone else: refused
    stranger = generate_private_key("ed25519")
    forged = tmp_path / "forged.jwt"
    forged.write_text(
        sign_revocations(
            RevocationList(
                "acme", now + 5, now + 86400, frozenset({"lic_airgapped01"}), frozenset()
            ),
            stranger,
        )
    )
    r = ms("guard", "import-revocations", forged, *common, state=state)
    assert r.returncode == 4, r.stderr
    (tmp_path / "garbage.jwt").write_text("not a list")
    r = ms("guard", "import-revocations", tmp_path / "garbage.jwt", *common, state=state)
    assert r.returncode == 4 and "Traceback" not in r.stderr

    # a newer list naming this device: revoked, and the Guard refuses from now on
    revoking = crl("new.jwt", now + 10, set(), {("lic_airgapped01", device_id)})
    r = ms("guard", "import-revocations", revoking, *common, state=state)
    assert r.returncode == 0 and "revoked" in r.stdout, r.stderr
    status = ms("guard", "status", *common, state=state)
    assert status.returncode != 0 and "revoked" in status.stderr
