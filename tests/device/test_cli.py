"""``modelseal device`` commands through Typer's CliRunner on the sub-app."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelseal.cli.device import app
from modelseal.device import (
    ActivationRequest,
    Component,
    DeviceFingerprint,
    Environment,
    StaticSource,
    collect,
)

UUID = "4c4c4544-0042-3510-8052-b4c04f4e3232"
MAC = "00:1b:21:aa:bb:cc"
HOST = "gpu-node-07"

runner = CliRunner()


@pytest.fixture
def static_fp(monkeypatch: pytest.MonkeyPatch) -> DeviceFingerprint:
    fp = collect(
        StaticSource(
            [
                Component.of("dmi.product_uuid", UUID),
                Component.of("net.mac", MAC),
                Component.of("os.hostname", HOST),
            ],
            Environment("vm", ("dmi:kvm",), "linux"),
        )
    )
    monkeypatch.setattr("modelseal.cli.device.collect", lambda: fp)
    return fp


def _no_raw_values(text: str) -> None:
    for raw in (UUID, MAC, HOST, UUID.upper()):
        assert raw not in text


def test_fingerprint_table(static_fp: DeviceFingerprint) -> None:
    result = runner.invoke(app, ["fingerprint"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    _no_raw_values(result.output)
    for c in static_fp.components:
        assert c.kind in result.output
        assert c.preview in result.output
    assert "2 strong, 1 weak components; in a VM" in result.output
    assert "dmi:kvm" in result.output


def test_fingerprint_json(static_fp: DeviceFingerprint) -> None:
    result = runner.invoke(app, ["fingerprint", "--json", "--threshold", "1"])
    assert result.exit_code == 0, result.output
    _no_raw_values(result.output)
    data = json.loads(result.output)
    assert [c["kind"] for c in data["components"]] == ["dmi.product_uuid", "net.mac", "os.hostname"]
    assert set(data["components"][0]) == {"kind", "strength", "weight", "preview"}
    assert data["environment"] == {
        "virtualization": "vm",
        "details": ["dmi:kvm"],
        "platform": "linux",
    }
    assert data["strength"]["strong"] == 2
    assert data["strength"]["weak_only_can_meet"] is True


def test_request_writes_a_private_file(tmp_path: Path, static_fp: DeviceFingerprint) -> None:
    out = tmp_path / "request.json"
    result = runner.invoke(app, ["request", "--label", "lab-gpu-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    req = ActivationRequest.load(out)
    assert req.label == "lab-gpu-01"
    assert len(req.components) == 3
    _no_raw_values(out.read_text())
    _no_raw_values(result.output)


def test_request_json_output_has_no_secrets(tmp_path: Path, static_fp: DeviceFingerprint) -> None:
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["request", "--label", "x", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["path"] == str(out)
    req = ActivationRequest.load(out)
    for c in req.components:
        assert c.secret not in result.output
        assert c.digest not in result.output
    assert data["nonce"] == req.nonce


def test_request_refuses_to_overwrite(tmp_path: Path, static_fp: DeviceFingerprint) -> None:
    out = tmp_path / "r.json"
    out.write_text("keep me")
    result = runner.invoke(app, ["request", "--label", "x", "--out", str(out)])
    assert result.exit_code == 2
    assert out.read_text() == "keep me"
    result = runner.invoke(app, ["request", "--label", "x", "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    ActivationRequest.load(out)


def test_request_bad_label_is_a_usage_error(tmp_path: Path, static_fp: DeviceFingerprint) -> None:
    result = runner.invoke(app, ["request", "--label", " ", "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert not (tmp_path / "r.json").exists()


def test_request_without_components_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = collect(StaticSource([], Environment("container", ("cgroup:docker",), "linux")))
    monkeypatch.setattr("modelseal.cli.device.collect", lambda: empty)
    result = runner.invoke(app, ["request", "--label", "x", "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 15  # docs/cli.md: not a bug (1), an environment without binding
    assert "no fingerprint component" in result.output


def test_real_machine_fingerprint_and_request(tmp_path: Path) -> None:
    fp = collect()
    result = runner.invoke(app, ["fingerprint", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert len(data["components"]) == len(fp.components)
    for c in fp.components:
        if len(c.value) >= 8:
            assert c.value not in result.output
    out = tmp_path / "request.json"
    result = runner.invoke(app, ["request", "--label", "ci", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert ActivationRequest.load(out).environment == fp.environment


def test_help_has_examples() -> None:
    for command in ("fingerprint", "request"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        assert "Example: modelseal device" in result.output
