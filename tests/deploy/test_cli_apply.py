"""``modelseal deploy apply|status|logs|delete|list`` as a user runs them.

The first ``apply`` is a real subprocess: the local backend's deployment
must outlive the command that applied it (a detached supervisor), and later
commands find it in the data directory. The other calls run in-process
through Typer's CliRunner (a subprocess costs seconds on a loaded machine)
with the same arguments, output streams and exit codes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modelseal.cli import _common
from modelseal.cli.deploy import app
from modelseal.deploy.backends._supervisor import process_start_time
from modelseal.deploy.nodeports import NodePortRange, recommend_node_ports
from modelseal.deploy.portstore import FileNodePortStore
from tests.deploy._kube_api import KubeApiServer
from tests.deploy.test_local import SPEC, port_is_free
from tests.serve._deployment import MODEL_ID, Deployment, make_deployment

EXE = [sys.executable, "-m", "modelseal.cli"]


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return make_deployment(tmp_path_factory.mktemp("cli-dep"))


runner = CliRunner()


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    # json_mode is process-wide; an earlier in-process --json would leave it on.
    monkeypatch.setattr(_common, "json_mode", False)


def ms(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``modelseal ARGS`` in-process, shaped like a subprocess result."""
    assert args[0] == "deploy"
    _common.json_mode = False
    result = runner.invoke(
        app,
        [*map(str, args[1:])],
        env={"COLUMNS": "200", "MODELSEAL_DEPLOY_DIR": str(cwd / "data")},
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def ms_process(
    *args: str | Path, cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "MODELSEAL_DEPLOY_DIR": str(cwd / "data")},
        check=False,
    )


def spec_file(dep: Deployment, folder: Path, name: str, license: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vendor.pub").write_bytes(dep.trust.read_bytes())
    path = folder / f"{name}.yaml"
    path.write_text(
        SPEC.format(name=name, replicas=1, root=dep.root, license=license or dep.license)
    )
    return path


def test_apply_status_logs_list_delete(dep: Deployment, tmp_path: Path) -> None:
    spec = spec_file(dep, tmp_path / "specs", "demo")
    r = ms_process("deploy", "apply", spec, "--json", "--timeout", "120", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    applied = json.loads(r.stdout)
    assert applied["ok"] and applied["phase"] == "Running" and applied["ready"]
    (port,) = applied["node_ports"]
    assert port in NodePortRange()
    # The CLI returned; the deployment runs on (its supervisor was detached).
    x = [[1.0, 0.5, 0.0, 2.0]]
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x[0]}]}
    ).encode()
    request = urllib.request.Request(
        f"{applied['forward_url']}/v2/models/{MODEL_ID}/infer",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        out = json.loads(response.read())["outputs"][0]["data"]
    np.testing.assert_allclose(out, dep.expected(np.array(x, np.float32))[0], rtol=1e-5)

    records = json.loads((tmp_path / "data" / "nodeports.json").read_text())
    assert records["reservations"] == {"local:models/demo": [port]}

    # A second deployment never gets the first one's port.
    other = spec_file(dep, tmp_path / "specs", "other")
    r = ms("deploy", "apply", other, "--no-wait", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["node_ports"] != [port]

    r = ms("deploy", "status", "demo", "-n", "models", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "models/demo" in r.stdout and "Running" in r.stdout and "1/1" in r.stdout

    r = ms("deploy", "logs", "demo", "-n", "models", "--tail", "5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 0 < len(r.stdout.splitlines()) <= 5 and "[replica 0]" in r.stdout

    r = ms("deploy", "list", "--json", cwd=tmp_path)
    names = [d["name"] for d in json.loads(r.stdout)["deployments"]]
    assert names == ["demo", "other"]

    status = json.loads(
        ms("deploy", "status", "demo", "-n", "models", "--json", cwd=tmp_path).stdout
    )
    supervisor = int(status["details"]["supervisor_pid"])
    r = ms("deploy", "delete", "demo", "-n", "models", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["released_node_ports"] == [port]
    assert process_start_time(supervisor) is None or _zombie(supervisor)
    assert port_is_free(port)
    r = ms("deploy", "delete", "other", "-n", "models", cwd=tmp_path)
    assert r.returncode == 0 and "free" in r.stderr

    r = ms("deploy", "status", "demo", "-n", "models", cwd=tmp_path)
    assert r.returncode == 30
    assert r.stderr.strip() == "error: no deployment models/demo on the local backend"
    assert json.loads((tmp_path / "data" / "nodeports.json").read_text())["reservations"] == {}


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return True
    return data[data.rfind(b")") + 2 :].split()[0] == b"Z"


def test_apply_that_never_gets_ready_is_exit_30_with_the_reason(
    dep: Deployment, tmp_path: Path
) -> None:
    token = dep.license.read_text()
    head, payload, sig = token.split(".")
    forged = tmp_path / "forged.jwt"
    forged.write_text(f"{head}.{payload}.{sig[:-4]}AAAA")
    spec = spec_file(dep, tmp_path / "specs", "bad", license=forged)
    r = ms("deploy", "apply", spec, "--json", "--timeout", "60", cwd=tmp_path)
    assert r.returncode == 30, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False
    assert doc["deployment"]["phase"] == "Failed"
    assert "error: not licensed" in doc["deployment"]["message"]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: models/bad is Failed")
    assert "modelseal deploy logs bad -n models" in lines[0]
    r = ms("deploy", "delete", "bad", "-n", "models", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_dry_run_reserves_and_starts_nothing(dep: Deployment, tmp_path: Path) -> None:
    spec = spec_file(dep, tmp_path / "specs", "demo")
    r = ms("deploy", "apply", spec, "--dry-run", "--node-ports", "31234", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "dry run: would run" in r.stdout and "31234" in r.stdout
    assert not (tmp_path / "data" / "nodeports.json").exists()
    assert not (tmp_path / "data" / "local" / "models" / "demo").exists()


def test_cli_errors_are_one_line_and_their_exit_code(dep: Deployment, tmp_path: Path) -> None:
    spec = spec_file(dep, tmp_path / "specs", "demo")
    broken = tmp_path / "specs" / "broken.yaml"
    broken.write_text(spec.read_text().replace("replicas: 1", 'replicas: "1"'))
    r = ms("deploy", "apply", broken, cwd=tmp_path)
    assert r.returncode == 3 and "spec.replicas" in r.stderr

    pvc = tmp_path / "specs" / "pvc.yaml"
    pvc.write_text(spec.read_text().replace(f"hostPath: {dep.root}", "persistentVolumeClaim: s"))
    r = ms("deploy", "apply", pvc, cwd=tmp_path)
    assert r.returncode == 3 and "spec.volumes[0]: a persistentVolumeClaim" in r.stderr
    # A refused apply gives its reservation back.
    records = tmp_path / "data" / "nodeports.json"
    assert json.loads(records.read_text())["reservations"] == {}

    r = ms("deploy", "apply", spec, "--backend", "kubernetes", "--kubeconfig", tmp_path / "nope",
           cwd=tmp_path)  # fmt: skip
    assert r.returncode == 30 and "no kubeconfig at" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    r = ms("deploy", "delete", "ghost", cwd=tmp_path)
    assert r.returncode == 30 and "no deployment default/ghost" in r.stderr


def test_apply_to_kubernetes_through_the_cli(tmp_path: Path, demo_spec: Path) -> None:
    server = KubeApiServer()
    try:
        config = server.kubeconfig(tmp_path / "kubeconfig")
        r = ms("deploy", "apply", demo_spec, "--backend", "kubernetes", "--kubeconfig", config,
               "--json", cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["phase"] == "Running" and doc["backend"] == "kubernetes"
        (port,) = doc["node_ports"]
        patches = server.api.calls("PATCH")
        assert len(patches) == 4
        assert patches[2].body["spec"]["ports"][0]["nodePort"] == port
        # status and delete find the backend from the records.
        r = ms("deploy", "status", "demo-classifier", "-n", "models", "--kubeconfig", config,
               "--json", cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0 and json.loads(r.stdout)["backend"] == "kubernetes"
        r = ms("deploy", "delete", "demo-classifier", "-n", "models", "--kubeconfig", config,
               cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert not server.api.objects
    finally:
        server.close()


# --- the file-backed NodePort store ----------------------------------------------------


def _reserve_many(path: str, worker: int, count: int) -> list[int]:
    store = FileNodePortStore(path)
    got: list[int] = []
    for i in range(count):
        got += store.reserve(
            f"w{worker}-{i}",
            lambda used: recommend_node_ports(2, used, NodePortRange(30000, 30200)),
        )
    return got


def test_file_store_never_double_books_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "nodeports.json")
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        results = pool.starmap(_reserve_many, [(path, w, 10) for w in range(4)])
    ports = [p for chunk in results for p in chunk]
    assert len(ports) == 80 and len(set(ports)) == 80
    store = FileNodePortStore(path)
    assert len(store.reserved()) == 40
    assert store.reserve("w0-0", lambda used: pytest.fail("held ports are returned")) == tuple(
        results[0][:2]
    )
    assert store.release("w0-0") == tuple(results[0][:2])
    assert store.release("w0-0") == ()


def test_file_store_refuses_a_damaged_record_file(tmp_path: Path) -> None:
    from modelseal.deploy.errors import DeployError

    path = tmp_path / "nodeports.json"
    path.write_text("{not json")
    with pytest.raises(DeployError, match="is not a NodePort record file"):
        FileNodePortStore(path).reserved()
