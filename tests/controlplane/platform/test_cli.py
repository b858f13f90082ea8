"""``modelseal platform ...`` against a real control plane process (in-process CLI runner:
a subprocess per command would cost a second each)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelseal.cli import app
from tests.controlplane.conftest import Server
from tests.controlplane.platform.conftest import SPEC

runner = CliRunner()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_platform_cli(server: Server, tmp_path: Path) -> None:
    env = {
        "MODELSEAL_SERVER": server.url,
        "MODELSEAL_TOKEN_FILE": str(server.token_file),
        "COLUMNS": "200",
    }

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["platform", *args], env=env)
        assert result.exit_code == code, (args, result.exit_code, result.output)
        return result.output

    def js(*args: str) -> object:
        return json.loads(cli(*args, "--json"))

    cli("vendors", "create", "--name", "Acme AI", "--business", "imaging", "--phone", "+1 555")
    assert "exists already" in cli("vendors", "create", "--name", "Acme AI", code=24)
    made = js(
        "models",
        "create",
        "--vendor",
        "Acme AI",
        "--name",
        "demo",
        "--function",
        "classifies",
        "--language",
        "Python",
        "--version",
        "1.0.0",
    )
    assert made["versions"][0]["version"] == "1.0.0"  # type: ignore[index]
    cli("models", "add-version", "demo", "--version", "1.1.0")
    table = cli("models", "list", "--search", "classif")
    assert "demo" in table and "1.0.0, 1.1.0" in table
    cli("models", "list", "--vendor", "nobody", code=23)

    guide = tmp_path / "usage.md"
    guide.write_bytes(b"# Usage\nPOST /demo/v2/models/demo/infer\n")
    doc = js("documents", "upload", "demo", str(guide), "--kind", "usage")
    assert doc["content_type"] == "text/markdown"  # type: ignore[index]
    evil = tmp_path / "evil.pdf"
    evil.write_bytes(b"<html><script>alert(1)</script>")
    assert "not accepted" in cli(
        "documents", "upload", "demo", str(evil), "--kind", "design", code=2
    )
    cli("documents", "upload", "demo", str(guide), "--kind", "manual", code=2)
    out = tmp_path / "copy.md"
    cli("documents", "download", doc["id"], "--out", str(out))  # type: ignore[index]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == doc["sha256"]  # type: ignore[index]
    assert "exists" in cli("documents", "download", doc["id"], "--out", str(out), code=2)  # type: ignore[index]

    spec = tmp_path / "deploy.yaml"
    spec.write_text(SPEC)
    cli("configs", "create", "--name", "demo-prod", "-f", str(spec), "--model", "demo")
    assert cli("configs", "show", "demo-prod") == SPEC
    spec.write_text(SPEC.replace("replicas: 1", "replicas: many"))
    bad = cli("configs", "create", "--name", "bad", "-f", str(spec), code=2)
    assert "spec.replicas" in bad
    cli("configs", "create", "--name", "x", "-f", str(tmp_path / "missing.yaml"), code=3)

    img = js(
        "images", "create", "--name", "demo", "--address", "registry.example.com/acme/demo:1.0.0"
    )
    assert [i["id"] for i in js("images", "list", "--search", "acme")] == [img["id"]]  # type: ignore[index,union-attr]

    cli(
        "routes",
        "create",
        "--id",
        "echo",
        "--prefix",
        "/echo",
        "--forward-url",
        "http://127.0.0.1:9",
        "--no-decrypt",
    )
    key_out = cli("keys", "create", "--name", "alice", "--routes", "echo")
    secret = key_out.split("\n")[1].strip()
    assert secret.startswith("msk_")
    assert secret not in cli("keys", "list")
    cli("keys", "revoke", "alice")
    assert js("keys", "list")[0]["revoked_at"] is not None  # type: ignore[index]
    assert "BEGIN PUBLIC KEY" not in cli("gateway-key", "show", code=23)
    cli("gateway-key", "create", "--public-out", str(tmp_path / "gw.pub"))
    assert (tmp_path / "gw.pub").read_text() == cli("gateway-key", "show")

    cli("deployments", "create", "--license", str(guide), code=2)  # neither --config nor --spec
    ports = js("deployments", "nodeports", "--count", "2")
    assert ports["used"] == [] and len(ports["recommended"]) == 2  # type: ignore[index,arg-type]
    assert "recommended: 30000, 30001" in cli("deployments", "nodeports", "--count", "2")
    cli("deployments", "status", "nothing", code=23)
    cli("models", "delete", "demo")
    cli("documents", "show", doc["id"], code=23)  # type: ignore[index]
    cli("vendors", "delete", "Acme AI")
    env["MODELSEAL_SERVER"] = ""
    assert "no server" in cli("vendors", "list", code=2)
