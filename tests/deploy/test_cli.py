"""``modelseal deploy export``: as a user runs it (a subprocess) and, for the many
option cases, through Typer's CliRunner in-process (a subprocess costs a second)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelseal.cli import _common
from modelseal.cli.deploy import app
from modelseal.deploy.validate import validate_manifests

EXE = [sys.executable, "-m", "modelseal.cli"]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    # _common.json_mode is process-wide and only main() resets it: an earlier
    # in-process ``--json`` command in this worker would leave it on.
    monkeypatch.setattr(_common, "json_mode", False)


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """In-process, shaped like a subprocess result so the tests read the same."""
    result = runner.invoke(app, [*map(str, args)], env={"COLUMNS": "200", **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def ms(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
        check=False,
    )


def test_export_prints_multi_document_yaml_with_recommended_ports(demo_spec: Path) -> None:
    r = ms("deploy", "export", demo_spec)
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(r.stdout))
    assert [d["kind"] for d in docs] == ["Secret", "ConfigMap", "Service", "Deployment"]
    assert docs[2]["spec"]["ports"][0]["nodePort"] == 30000
    assert "recommended from 30000-32767" in r.stderr
    validate_manifests(docs, versions=["1.25", "1.37"])


def test_export_avoids_used_ports_and_honours_the_range(full_spec: Path) -> None:
    r = run(
        "export",
        full_spec,
        "--used-ports",
        "31000-31002,31004",
        "--node-port-range",
        "31000-31010",
    )
    assert r.returncode == 0, r.stderr
    service = next(d for d in yaml.safe_load_all(r.stdout) if d["kind"] == "Service")
    assert [p["nodePort"] for p in service["spec"]["ports"]] == [31005, 31006, 31007]
    r = run("export", full_spec, env={"MODELSEAL_NODE_PORT_RANGE": "32000-32002"})
    service = next(d for d in yaml.safe_load_all(r.stdout) if d["kind"] == "Service")
    assert [p["nodePort"] for p in service["spec"]["ports"]] == [32000, 32001, 32002]


def test_export_with_chosen_ports(demo_spec: Path) -> None:
    r = run("export", demo_spec, "--node-ports", "30080")
    assert r.returncode == 0, r.stderr
    assert "nodePort: 30080" in r.stdout and "recommended" not in r.stderr


def test_errors_are_one_line_with_documented_exit_codes(demo_spec: Path, tmp_path: Path) -> None:
    cases = [
        (
            ["--node-ports", "40000"],
            30,
            "error: NodePort(s) [40000] outside the node port range 30000-32767",
        ),
        (
            ["--node-ports", "30080,30081"],
            30,
            "error: the deployment exposes 1 port(s) but 2 NodePort(s) were given",
        ),
        (
            ["--node-port-range", "30000-30000", "--used-ports", "30000"],
            30,
            "error: 1 NodePort(s) needed but only 0 free",
        ),
        (["--node-port-range", "9-1"], 2, "error: node port range 9-1 must satisfy"),
    ]
    for extra, code, message in cases:
        r = run("export", demo_spec, *extra)
        assert r.returncode == code, (extra, r.stderr)
        assert r.stderr.strip().splitlines()[-1].startswith(message), r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""

    demo_spec.write_text(demo_spec.read_text().replace("replicas: 2", 'replicas: "2"'))
    r = ms("deploy", "export", demo_spec)  # once for real: the one line a user sees
    assert r.returncode == 3
    assert r.stderr.strip() == f"error: {demo_spec}: spec.replicas: must be an integer"

    r = run("export", tmp_path / "absent.yaml")
    assert r.returncode == 3 and "no such file" in r.stderr

    r = run("export", demo_spec, "--node-ports", "eighty")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_out_file_and_helm_chart(demo_spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo.yaml"
    r = run("export", demo_spec, "--out", out)
    assert r.returncode == 0 and r.stdout == ""
    assert len(list(yaml.safe_load_all(out.read_text()))) == 4
    assert out.stat().st_mode & 0o077 == 0  # it carries the license
    r = run("export", demo_spec, "--out", out)
    assert r.returncode == 2 and "exists" in r.stderr and "--force" in r.stderr
    assert run("export", demo_spec, "--out", out, "--force").returncode == 0

    chart = tmp_path / "chart"
    r = run("export", demo_spec, "--format", "helm", "--out", chart, "--node-ports", "30080")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((chart / "values.yaml").read_text())["nodePorts"] == [30080]
    r = run("export", demo_spec, "--format", "helm", "--out", chart)
    assert r.returncode == 2 and "not empty" in r.stderr


def test_helm_chart_defaults_to_a_folder_named_after_the_deployment(
    demo_spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    r = run("export", demo_spec, "--format", "helm")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo-classifier" / "Chart.yaml").is_file()


def test_the_core_and_the_rest_of_the_cli_do_not_load_the_deploy_library() -> None:
    code = (
        "import sys, modelseal, modelseal.cli; "
        "bad = [m for m in ('modelseal.deploy', 'yaml', 'kubernetes', 'kubernetes_validate', "
        "'helm_python') if m in sys.modules]; print(bad)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert r.stdout.strip() == "[]"


def test_the_deploy_library_imports_no_server_database_or_cluster_client() -> None:
    code = (
        "import sys, modelseal.deploy, modelseal.deploy.validate; "
        "bad = [m for m in ('fastapi', 'starlette', 'sqlalchemy', 'asyncpg', 'psycopg', "
        "'kubernetes', 'helm_python', 'modelseal.cli', 'modelseal.controlplane') "
        "if m in sys.modules]; print(bad)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert r.stdout.strip() == "[]"
