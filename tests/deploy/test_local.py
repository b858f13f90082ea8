"""The local backend with real ``modelseal serve`` processes on loopback.

Every wait is bounded; every process started is stopped (delete, or close in
the fixture's finaliser), and the tests check that it is.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.deploy import bundle_from, load_bundle, parse_spec
from modelseal.deploy.backends import (
    DeploymentNotFoundError,
    DeploymentStatus,
    _supervisor,
    wait_ready,
)
from modelseal.deploy.backends._supervisor import (
    Plan,
    RotatingLog,
    SupervisionPolicy,
    Supervisor,
    process_start_time,
    read_logs,
)
from modelseal.deploy.backends.local import (
    LocalBackend,
    expand_vars,
    listening_ports,
    local_command,
)
from modelseal.deploy.errors import DeploySpecError, NodePortUnavailableError
from tests.serve._deployment import MODEL_ID, Deployment, free_port, make_deployment

FAST = SupervisionPolicy(
    backoff_initial_s=0.1,
    backoff_max_s=0.5,
    max_quick_crashes=3,
    stable_s=20.0,
    health_interval_s=0.2,
    startup_s=90.0,
    grace_s=10.0,
)

SPEC = """\
apiVersion: modelseal/v1
kind: ModelDeployment
metadata: {{name: {name}, namespace: models}}
spec:
  model: {{name: demo, version: "1.0.0"}}
  image: registry.example.com/acme/demo:1.0.0
  containerPort: 8080
  command: ["modelseal", "serve", "/models/model.mseal", "--port", "8080", "--threads", "2"]
  env: {{LOG_LEVEL: info}}
  replicas: {replicas}
  volumes: [{{name: models, hostPath: {root}, mountPath: /models}}]
  license: {{file: {license}}}
  trust: {{file: vendor.pub}}
  route: {{prefix: /demo}}
"""


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return make_deployment(tmp_path_factory.mktemp("local-dep"))


def write_spec(
    dep: Deployment, folder: Path, *, name: str = "demo", replicas: int = 1, license: str = ""
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "deploy.yaml"
    path.write_text(
        SPEC.format(
            name=name,
            replicas=replicas,
            root=dep.root,
            license=license or dep.license,
        )
    )
    (folder / "vendor.pub").write_bytes(dep.trust.read_bytes())
    return path


@pytest.fixture
def backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., LocalBackend]]:
    # The replicas inherit this environment: their guard state goes to the
    # test's folder (shared by its replicas, as on a device), not to ~/.local.
    monkeypatch.setenv("MODELSEAL_STATE_DIR", str(tmp_path / "guard-state"))
    made: list[LocalBackend] = []

    def make(**options: object) -> LocalBackend:
        options.setdefault("policy", FAST)
        backend = LocalBackend(tmp_path / "data", **options)  # type: ignore[arg-type]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        for status in backend.list():
            backend.delete(status.namespace, status.name)
        backend.close()


def infer(url: str, x: list[float]) -> list[float]:
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x}]}
    ).encode()
    request = urllib.request.Request(
        f"{url}/v2/models/{MODEL_ID}/infer",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        doc = json.loads(response.read())
    return list(doc["outputs"][0]["data"])


def port_is_free(port: int) -> bool:
    """Nothing listens on it and a server can bind it (TIME_WAIT of old connections aside)."""
    if port in listening_ports():
        return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def alive(pid: int) -> bool:
    """Running, or a zombie leader whose other threads still run (they hold its files)."""
    return process_start_time(pid) is not None


def pids_of(status: DeploymentStatus) -> list[int]:
    return [int(p) for p in status.details.get("pids", "").split(",") if p]


# --- with processes -----------------------------------------------------------------


def test_apply_predict_survive_kill_9_and_delete(
    dep: Deployment, tmp_path: Path, backends: Callable[..., LocalBackend]
) -> None:
    backend = backends()
    bundle = load_bundle(write_spec(dep, tmp_path / "spec", replicas=2))
    port = free_port()
    first = backend.apply(bundle, [port])
    assert first.phase in ("Pending", "Running")
    assert first.forward_url == f"http://127.0.0.1:{port}"
    status = wait_ready(backend, "models", "demo", timeout_s=90)
    assert status.ready, status
    assert status.ready_replicas == 2 and status.node_ports == (port,)

    x = [1.0, 2.0, 3.0, 4.0]
    expected = dep.expected(np.array([x], np.float32))[0]
    for _ in range(4):  # round-robin over both replicas
        np.testing.assert_allclose(infer(status.forward_url or "", x), expected, rtol=1e-5)

    # The license and keys: in the state dir, 0600, and what the bundle held.
    state = Path(status.details["state_dir"])
    assert (state / "license.jwt").read_text() == bundle.license
    assert stat.S_IMODE((state / "license.jwt").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "trust.pub").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700

    victim = pids_of(status)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: (s := backend.status("models", "demo")).restarts >= 1 and s.ready,
        90,
        "the killed replica to come back",
    )
    after = backend.status("models", "demo")
    assert victim not in pids_of(after) and len(pids_of(after)) == 2
    np.testing.assert_allclose(infer(after.forward_url or "", x), expected, rtol=1e-5)

    logs = backend.logs("models", "demo", tail=500)
    assert "[replica 0]" in logs and "[replica 1]" in logs
    assert "replica exited with signal SIGKILL" in logs
    assert len(backend.logs("models", "demo", tail=3).splitlines()) == 3
    assert [s.name for s in backend.list()] == ["demo"]

    pids = pids_of(after)
    assert backend.delete("models", "demo") is True
    assert not any(alive(p) for p in pids)
    assert port_is_free(port)
    assert not state.exists()
    assert backend.delete("models", "demo") is False
    with pytest.raises(DeploymentNotFoundError):
        backend.status("models", "demo")


def test_bad_license_is_failed_with_the_serve_error_line(
    dep: Deployment, tmp_path: Path, backends: Callable[..., LocalBackend]
) -> None:
    token = dep.license.read_text()
    head, payload, sig = token.split(".")
    forged = tmp_path / "forged.jwt"
    forged.write_text(f"{head}.{payload}.{sig[:-4]}AAAA")
    backend = backends()
    bundle = load_bundle(write_spec(dep, tmp_path / "spec", license=str(forged)))
    port = free_port()
    backend.apply(bundle, [port])
    status = wait_ready(backend, "models", "demo", timeout_s=60)
    assert status.phase == "Failed", status
    assert status.message.startswith("replica 0: error: not licensed"), status.message
    assert "\n" not in status.message
    assert "not licensed" in backend.logs("models", "demo")
    # The NodePort answers, with a 503 and no replica behind it.
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5)
    assert info.value.code == 503
    assert backend.delete("models", "demo")
    assert port_is_free(port)


def test_a_crash_loop_ends_failed_after_the_backoff(
    dep: Deployment, tmp_path: Path, backends: Callable[..., LocalBackend]
) -> None:
    fake = tmp_path / "crashing-python"
    fake.write_text("#!/bin/sh\necho 'error: boom (exit 1)' >&2\nexit 1\n")
    fake.chmod(0o755)
    backend = backends(python=str(fake), host="0.0.0.0")
    bundle = load_bundle(write_spec(dep, tmp_path / "spec"))
    started = time.monotonic()
    port = free_port()
    assert backend.apply(bundle, [port]).forward_url == f"http://127.0.0.1:{port}"
    status = wait_ready(backend, "models", "demo", timeout_s=30)
    assert status.phase == "Failed", status
    assert "crashed 3 times in a row, last exit code 1: error: boom" in status.message
    assert status.restarts == 2
    # Back-off 0.1 s then 0.2 s: it did wait, and not for long.
    assert 0.3 <= time.monotonic() - started < 20
    assert backend.logs("models", "demo").count("error: boom") == 3


def test_liveness_failures_restart_a_hung_replica(
    dep: Deployment, tmp_path: Path, backends: Callable[..., LocalBackend]
) -> None:
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!{sys.executable}\n" + (Path(__file__).parent / "fake_serve.py").read_text())
    fake.chmod(0o755)
    sick = tmp_path / "sick"
    path = write_spec(dep, tmp_path / "spec")
    path.write_text(path.read_text().replace("LOG_LEVEL: info", f"FAKE_SERVE_SICK: {sick}"))
    backend = backends(python=str(fake))
    backend.apply(load_bundle(path), [free_port()])
    status = wait_ready(backend, "models", "demo", timeout_s=30)
    assert status.ready, status
    sick.touch()  # the model hangs: ready and live fail
    wait_for(lambda: backend.status("models", "demo").phase == "Degraded", 10, "it to be unready")
    # Why it is not ready, in the status and in the replica's log.
    assert "readiness probe: HTTP 500" in backend.status("models", "demo").message
    assert "modelseal-local: not ready: HTTP 500" in backend.logs("models", "demo")
    wait_for(lambda: backend.status("models", "demo").restarts == 1, 20, "the liveness kill")
    assert "killed: failed 3 liveness checks" in backend.status("models", "demo").message
    sick.unlink()  # the restarted replica is healthy
    status = wait_ready(backend, "models", "demo", timeout_s=20)
    assert status.ready and status.restarts == 1, status
    logs = backend.logs("models", "demo")
    assert logs.count("fake serve on") == 2
    assert "replica exited with signal SIGKILL" in logs


def test_a_replica_that_ignores_sigterm_is_killed_after_the_grace_period(
    dep: Deployment, tmp_path: Path, backends: Callable[..., LocalBackend]
) -> None:
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!{sys.executable}\n" + (Path(__file__).parent / "fake_serve.py").read_text())
    fake.chmod(0o755)
    path = write_spec(dep, tmp_path / "spec")
    path.write_text(path.read_text().replace("LOG_LEVEL: info", 'FAKE_SERVE_IGNORE_TERM: "1"'))
    grace = 1.0
    backend = backends(python=str(fake), policy=replace(FAST, grace_s=grace))
    backend.apply(load_bundle(path), [free_port()])
    status = wait_ready(backend, "models", "demo", timeout_s=30)
    assert status.ready, status
    (pid,) = pids_of(status)
    started = time.monotonic()
    assert backend.delete("models", "demo")
    assert time.monotonic() - started >= grace  # SIGTERM first, and it was given the grace
    assert not alive(pid)


def test_detached_supervisor_outlives_its_backend(
    dep: Deployment, tmp_path: Path, backends: Callable[..., LocalBackend]
) -> None:
    bundle = load_bundle(write_spec(dep, tmp_path / "spec"))
    port = free_port()
    starter = backends(supervise="process")
    starter.apply(bundle, [port])
    starter.close()  # a CLI call ending: the deployment keeps running

    later = backends(supervise="process")  # a later CLI call
    status = wait_ready(later, "models", "demo", timeout_s=90)
    assert status.ready, status
    supervisor = int(status.details["supervisor_pid"])
    assert supervisor != os.getpid() and alive(supervisor)
    out = infer(status.forward_url or "", [0, 0, 0, 1])
    np.testing.assert_allclose(out, dep.expected(np.array([[0, 0, 0, 1]], np.float32))[0])

    # Someone else listening on a NodePort: refused before anything starts.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        other = bundle_from(
            parse_spec(
                (tmp_path / "spec" / "deploy.yaml").read_text().replace("name: demo,", "name: b,")
            ),
            tmp_path / "spec",
        )
        with pytest.raises(NodePortUnavailableError, match=f"NodePort {taken} is not free"):
            later.apply(other, [taken])
        assert taken in later.used_node_ports()
    assert port not in later.used_node_ports()  # ours: in the records, not "someone else's"

    pids = pids_of(status)
    assert later.delete("models", "demo")
    wait_for(lambda: not alive(supervisor), 10, "the supervisor to exit")
    assert not any(alive(p) for p in pids)
    assert port_is_free(port)


def test_a_killed_supervisor_leaves_stopped_and_apply_takes_over(
    dep: Deployment, tmp_path: Path, backends: Callable[..., LocalBackend]
) -> None:
    backend = backends(supervise="process")
    path = write_spec(dep, tmp_path / "spec")
    port = free_port()
    backend.apply(load_bundle(path), [port])
    status = wait_ready(backend, "models", "demo", timeout_s=90)
    assert status.ready, status
    orphans = pids_of(status)
    os.kill(int(status.details["supervisor_pid"]), signal.SIGKILL)
    wait_for(
        lambda: backend.status("models", "demo").phase == "Stopped", 10, "the supervisor to die"
    )
    assert all(alive(p) for p in orphans)  # its replicas run on, unsupervised
    assert "supervisor is not running" in backend.status("models", "demo").message

    # Apply again, now with two replicas: the orphans go, the new copy runs on the same port.
    path.write_text(path.read_text().replace("replicas: 1", "replicas: 2"))
    backend.apply(load_bundle(path), [port])
    assert not any(alive(p) for p in orphans)
    status = wait_ready(backend, "models", "demo", timeout_s=90)
    assert status.ready and status.replicas == 2 and status.node_ports == (port,), status
    assert not set(pids_of(status)) & set(orphans)


def test_close_stops_thread_supervised_deployments(
    dep: Deployment, tmp_path: Path, backends: Callable[..., LocalBackend]
) -> None:
    backend = backends()
    port = free_port()
    backend.apply(load_bundle(write_spec(dep, tmp_path / "spec")), [port])
    status = wait_ready(backend, "models", "demo", timeout_s=90)
    assert status.ready, status
    pids = pids_of(status)
    backend.close()
    assert not any(alive(p) for p in pids)
    assert port_is_free(port)
    stopped = backends().status("models", "demo")
    assert stopped.phase == "Stopped" and "supervisor is not running" in stopped.message


# --- pure parts -----------------------------------------------------------------------


def test_dry_run_starts_nothing(
    dep: Deployment, tmp_path: Path, backends: Callable[..., LocalBackend]
) -> None:
    backend = backends()
    status = backend.apply(load_bundle(write_spec(dep, tmp_path / "spec")), [31000], dry_run=True)
    assert status.phase == "Pending" and status.message.startswith("dry run: would run")
    assert f"serve {dep.root}/model.mseal --threads 2 --license" in status.message
    assert backend.list() == []


def test_command_translation(dep: Deployment, tmp_path: Path) -> None:
    spec = parse_spec(
        SPEC.format(name="t", replicas=1, root="/srv/m", license="l.jwt")
        .replace(
            '"--port", "8080"', '"--license=$(MODELSEAL_LICENSE)", "--host", "0.0.0.0", "$$(X)"'
        )
        .replace("trust: {file: vendor.pub}", "envelopeKey: {file: g.pub}")
    )
    from modelseal.deploy.bundle import DeploymentBundle

    bundle = DeploymentBundle(spec, "x.y.z", envelope_key="PEM")
    argv, env = local_command(
        bundle, {"license": "/s/license.jwt", "envelope_key": "/s/e.pub"}, python="/py"
    )
    assert argv == [
        "/py",
        "-m",
        "modelseal",
        "serve",
        "/srv/m/model.mseal",
        "--license=/s/license.jwt",
        "$(X)",
        "--threads",
        "2",
        "--envelope-key",
        "/s/e.pub",
    ]
    assert env == {
        "MODELSEAL_LICENSE": "/s/license.jwt",
        "MODELSEAL_ENVELOPE_KEY": "/s/e.pub",
        "LOG_LEVEL": "info",
    }
    assert expand_vars("$(A)-$(B)-$$(A)-$$", {"A": "1"}) == "1-$(B)-$(A)-$"


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (("command: [", "command: [python, -m, "), "spec.command", "only 'modelseal serve"),
        (
            ("command: [", "args: [x]\n  # command: ["),
            "spec.command",
            "needs the command",
        ),
        (
            ("hostPath: /srv/m", "persistentVolumeClaim: store"),
            "spec.volumes[0]",
            "persistentVolumeClaim",
        ),
        (
            (
                "containerPort: 8080",
                "containerPort: 8080\n  extraPorts: [{name: g, containerPort: 9}]",
            ),
            "spec.extraPorts",
            "one HTTP port",
        ),
    ],
)
def test_specs_the_local_backend_cannot_run(
    edit: tuple[str, str], field: str, message: str
) -> None:
    text = SPEC.format(name="t", replicas=1, root="/srv/m", license="l.jwt").replace(*edit)
    from modelseal.deploy.bundle import DeploymentBundle

    bundle = DeploymentBundle(parse_spec(text), "x.y.z")
    with pytest.raises(DeploySpecError) as info:
        local_command(bundle, {"license": "/s/l"})
    assert any(path == field and message in text for path, text in info.value.problems), (
        info.value.problems
    )


def test_missing_host_path_is_a_spec_error(
    dep: Deployment, tmp_path: Path, backends: Callable[..., LocalBackend]
) -> None:
    path = write_spec(dep, tmp_path / "spec")
    path.write_text(path.read_text().replace(f"hostPath: {dep.root}", "hostPath: /nonexistent/m"))
    with pytest.raises(
        DeploySpecError,
        match=r"spec.volumes\[0\].hostPath: no such directory or file on this machine",
    ):
        backends().apply(load_bundle(path), [free_port()])


def test_status_file_is_never_overwritten_by_an_older_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule: status.json is the newest state once every publisher is done.

    The CI flake: in process mode status() reads only status.json. Two replica
    threads publish at the same probe tick; one took its snapshot (replica 1
    not ready), was descheduled before its rename, and the other's newer
    snapshot (both ready) was replaced by the older one. Nothing changed after
    that, so nothing was published again: "1 of 2 ready" until the timeout.
    Here thread A is held between its snapshot and its write, as the
    scheduler held it.
    """
    plan = Plan("models", "demo", 2, ["unused"], {}, "127.0.0.1", [1])
    supervisor = Supervisor(plan, tmp_path, mode="process")
    for replica in supervisor._replicas:
        replica.pid, replica.port = 100 + replica.index, 200 + replica.index
    supervisor._replicas[0].ready = True
    real_write = _supervisor.write_json_atomic
    a_has_snapshot, release_a = threading.Event(), threading.Event()

    def write(path: Path, data: object, **options: int) -> None:
        if threading.current_thread().name == "publisher-a":
            a_has_snapshot.set()
            release_a.wait(10)
        real_write(path, data, **options)

    monkeypatch.setattr(_supervisor, "write_json_atomic", write)
    a = threading.Thread(target=supervisor._publish, name="publisher-a")
    a.start()
    assert a_has_snapshot.wait(10)
    with supervisor._lock:  # replica 1 becomes ready while A's snapshot is on its way
        supervisor._replicas[1].ready = True
    b = threading.Thread(target=supervisor._publish, name="publisher-b")
    b.start()
    b.join(2)  # unfixed, B writes at once; fixed, it waits for A
    release_a.set()
    a.join(10)
    b.join(10)
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["phase"], status["ready_replicas"]) == ("Running", 2), status


def test_a_garbled_health_answer_is_a_failed_probe_not_an_exception() -> None:
    """Rule: anything the far end answers is a probe result; the health thread never dies.

    http.client's BadStatusLine is no OSError: before, it escaped the probe and
    ended the replica's thread, leaving the replica unready with nothing said.
    """
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"SSH-2.0-not-http\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        result = _supervisor._probe(port, "/v2/health/ready", 1.0)
        thread.join(5)
    assert result is not None and result.startswith("bad answer: BadStatusLine"), result
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
    assert _supervisor._probe(free, "/v2/health/ready", 1.0) == "Connection refused"


def test_a_supervision_error_fails_the_replica_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule: a bug in a replica's supervision thread is a Failed replica with the error
    in the status and its log, not a thread gone silent."""
    plan = Plan("models", "demo", 1, ["unused"], {}, "127.0.0.1", [1])
    supervisor = Supervisor(plan, tmp_path, mode="process")

    def broken(replica: object, log: object) -> None:
        raise RuntimeError("probe thread bug")

    monkeypatch.setattr(supervisor, "_supervise_replica", broken)
    log = RotatingLog(tmp_path / "replica-0.log", 1 << 16, 1)
    supervisor._run_replica(supervisor._replicas[0], log)
    log.close()
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "Failed", status
    assert status["message"] == "replica 0: supervisor error: RuntimeError: probe thread bug"
    assert "supervisor error: RuntimeError: probe thread bug" in read_logs(tmp_path, 50)


def test_a_zombie_leader_with_running_threads_is_not_gone(tmp_path: Path) -> None:
    """Rule: a process counts as gone only when none of its threads runs.

    The second flake of the killed-supervisor test: the leader of a SIGKILLed
    supervisor showed Z while its other threads were still exiting and its
    NodePort still listened; "gone" let apply check the port too early. Here
    the leader ends (pthread_exit) while a thread and a listening socket stay.
    """
    child = (
        "import ctypes, socket, threading, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
        "threading.Thread(target=time.sleep, args=(60,)).start()\n"
        "print(s.getsockname()[1], flush=True)\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        wait_for(lambda: _leader_state(proc.pid) == b"Z", 10, "the leader to exit")
        assert port in listening_ports()  # its files are still open
        assert process_start_time(proc.pid) is not None
    finally:
        proc.kill()
        proc.wait(10)
    assert process_start_time(proc.pid) is None


def _leader_state(pid: int) -> bytes:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        data = handle.read()
    return data[data.rfind(b")") + 2 :].split()[0]


def test_rotating_log_keeps_the_newest_lines(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "replica-0.log", max_bytes=400, backups=2)
    for i in range(100):
        log.write_line(f"line {i}\n".encode())
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["replica-0.log", "replica-0.log.1", "replica-0.log.2"]
    assert all(p.stat().st_size <= 400 for p in tmp_path.iterdir())
    tail = read_logs(tmp_path, 5).splitlines()
    assert [line.split("] ", 1)[1] for line in tail] == [f"line {i}" for i in range(95, 100)]


def test_the_local_backend_loads_no_cluster_client_server_or_cli() -> None:
    import subprocess
    import sys

    code = (
        "import sys, modelseal.deploy.backends.local, modelseal.deploy.portstore, "
        "modelseal.deploy.backends._supervisor; "
        "bad = [m for m in ('kubernetes', 'fastapi', 'sqlalchemy', 'uvicorn', 'modelseal.cli', "
        "'modelseal.controlplane', 'modelseal.serve') if m in sys.modules]; print(bad)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert r.stdout.strip() == "[]"


_SEGMENT = st.text(alphabet="abcxyz019._-", min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..")
)
_PATHS = st.lists(_SEGMENT, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


@settings(max_examples=150, deadline=None)
@given(mount=_PATHS, host=_PATHS, tail=st.lists(_SEGMENT, max_size=3), other=_PATHS)
def test_paths_under_a_mount_map_to_its_host_path_and_nothing_else_moves(
    mount: str, host: str, tail: list[str], other: str
) -> None:
    from modelseal.deploy.bundle import DeploymentBundle

    text = (
        SPEC.format(name="t", replicas=1, root=host, license="l.jwt")
        .replace("mountPath: /models", f"mountPath: {json.dumps(mount)}")
        .replace('"/models/model.mseal"', json.dumps("/".join([mount, *tail])))
        .replace('"--threads", "2"', f'"--x={other}"')
    )
    spec = parse_spec(text)
    argv, _ = local_command(DeploymentBundle(spec, "x.y.z"), {"license": "/s/l"})
    assert argv[4] == "/".join([host.rstrip("/"), *tail])
    inside = other == mount or other.startswith(mount + "/")
    expected = host.rstrip("/") + other[len(mount) :] if inside else other
    assert argv[5] == f"--x={expected}"
