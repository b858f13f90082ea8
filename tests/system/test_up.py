"""``modelseal up``: the whole system from one command, as real processes on loopback.

What a newcomer relies on: the first run sets everything up and the printed
curl line really gets a prediction through the gateway; a second run reuses
the data (no second seat); Ctrl-C stops everything; a process that dies, or
``modelseal up`` itself killed with -9, leaves nothing running behind.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest

from modelseal.envelope import MEDIA_TYPE
from modelseal.system import demo_model

START_TIMEOUT = 240.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Ports:
    controlplane: int
    gateway: int
    serve: int

    def args(self) -> list[str]:
        return [
            "--controlplane-port",
            str(self.controlplane),
            "--gateway-port",
            str(self.gateway),
            "--serve-port",
            str(self.serve),
        ]

    def all_free(self) -> bool:
        for port in (self.controlplane, self.gateway, self.serve):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return False
        return True


@dataclass
class Prepared:
    data_dir: Path
    ports: Ports
    first_output: str


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "COLUMNS": "250"}


def up_command(prepared: Prepared, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "modelseal",
        "up",
        "--data-dir",
        str(prepared.data_dir),
        *prepared.ports.args(),
        *extra,
    ]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    root = tmp_path_factory.mktemp("system")
    ports = Ports(free_port(), free_port(), free_port())
    data = root / "data"
    done = subprocess.run(
        [sys.executable, "-m", "modelseal", "up", "--data-dir", str(data), *ports.args(), "--once"],
        capture_output=True,
        text=True,
        env=_env(root),
        timeout=START_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return Prepared(data, ports, done.stdout)


class Running:
    """A long-running ``modelseal up`` whose output is read until its curl line."""

    def __init__(self, prepared: Prepared) -> None:
        self.log = prepared.data_dir.parent / f"up-{time.monotonic_ns()}.log"
        self._handle = self.log.open("w")
        self.proc = subprocess.Popen(
            up_command(prepared),
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            env=_env(prepared.data_dir.parent),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.curl_line() is not None:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"modelseal up did not come up:\n{self.output()[-4000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def curl_line(self) -> str | None:
        for line in self.output().splitlines():
            if line.startswith("curl "):
                return line
        return None

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        for child in self.children():
            child.kill()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._handle.close()


@pytest.fixture
def running(prepared: Prepared) -> Iterator[Running]:
    run = Running(prepared)
    yield run
    run.kill()


def wait_gone(processes: list[psutil.Process], timeout: float = 30.0) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return alive


def test_the_first_run_sets_up_the_whole_flow_with_public_commands(prepared: Prepared) -> None:
    out = prepared.first_output
    # each step is a documented command, shown to the user as it runs
    for command in (
        "modelseal controlplane init",
        "modelseal seal",
        "modelseal admin orders create",
        "modelseal device activate",
        "modelseal gateway keys create",
        "modelseal serve",
        "modelseal gateway --routes",
    ):
        assert command in out, command
    assert "stopped (--once)" in out
    assert prepared.ports.all_free()
    # the vendor keeps no plaintext model and secrets are private
    assert not list(prepared.data_dir.rglob("*.onnx"))
    secrets = prepared.data_dir / "secrets"
    assert secrets.stat().st_mode & 0o777 == 0o700
    assert (secrets / "demo-api-key").stat().st_mode & 0o777 == 0o600
    assert (secrets / "owner.token").stat().st_mode & 0o777 == 0o600


def test_the_printed_curl_line_predicts_through_the_gateway_and_ctrl_c_stops_all(
    prepared: Prepared, running: Running
) -> None:
    out = running.output()
    assert "controlplane init" not in out and "device activate" not in out, "set-up repeated"
    state = json.loads((prepared.data_dir / "system.json").read_text())
    assert state["license_id"] in out  # the same license, no second seat

    line = running.curl_line()
    assert line is not None
    answer = subprocess.run(
        shlex.split(line), capture_output=True, text=True, timeout=60, check=True
    )
    body = json.loads(answer.stdout)
    got = np.asarray(body["outputs"][0]["data"], np.float32)
    want = demo_model.expected(np.asarray([demo_model.SAMPLE], np.float32))[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # the model service itself answers only envelopes
    direct = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{content_type}",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "x",
                            "shape": [1, 4],
                            "datatype": "FP32",
                            "data": list(demo_model.SAMPLE),
                        }
                    ]
                }
            ),
            f"http://127.0.0.1:{prepared.ports.serve}/v2/models/demo/infer",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert direct.stdout.startswith(MEDIA_TYPE), direct.stdout
    # without the API key the gateway refuses
    refused = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            f"http://127.0.0.1:{prepared.ports.gateway}/demo/v2/models/demo/infer",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert refused.stdout == "401"

    children = running.children()
    assert len(children) >= 3
    running.proc.send_signal(signal.SIGINT)
    assert running.proc.wait(60) == 0, running.output()[-2000:]
    assert not wait_gone(children), "a process outlived modelseal up"
    assert prepared.ports.all_free()
    assert "stopped; run it again" in running.output()


def test_a_process_that_dies_stops_the_rest_with_a_clear_error(running: Running) -> None:
    children = running.children()
    serve = [c for c in children if "serve" in c.cmdline()[3:5]]
    assert serve, [c.cmdline() for c in children]
    serve[0].kill()
    code = running.proc.wait(60)
    assert code == 31, running.output()[-2000:]
    assert "serve exited with code -9" in running.output()
    assert not wait_gone(children)


def test_kill_9_of_modelseal_up_leaves_nothing_running(
    running: Running, prepared: Prepared
) -> None:
    children = running.children()
    assert len(children) >= 3
    running.proc.kill()
    running.proc.wait(30)
    assert not wait_gone(children), "PR_SET_PDEATHSIG did not take the servers along"
    deadline = time.monotonic() + 30
    while not prepared.ports.all_free() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert prepared.ports.all_free()


def test_a_port_in_use_is_refused_before_anything_starts(prepared: Prepared) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        taken.bind(("127.0.0.1", prepared.ports.gateway))
        taken.listen()
        done = subprocess.run(
            up_command(prepared, "--once"),
            capture_output=True,
            text=True,
            env=_env(prepared.data_dir.parent),
            timeout=60,
            check=False,
        )
    assert done.returncode == 26, done.stdout + done.stderr
    assert "--gateway-port" in done.stderr
    assert "Starting" not in done.stdout


def test_a_data_dir_bound_to_another_control_plane_port_is_refused(prepared: Prepared) -> None:
    other = Ports(free_port(), prepared.ports.gateway, prepared.ports.serve)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelseal",
            "up",
            "--data-dir",
            str(prepared.data_dir),
            *other.args(),
            "--once",
        ],
        capture_output=True,
        text=True,
        env=_env(prepared.data_dir.parent),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "heartbeats to" in done.stderr and "--controlplane-port" in done.stderr
