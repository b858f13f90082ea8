"""``modelseal up``: the whole system from one command, as real processes on loopback.

What a newcomer relies on: the first run sets everything up through the
documented commands (the model deployed by the platform with the local
backend, the gateway following the control plane) and the printed curl line
really gets a prediction through the gateway; the printed owner login works
with its TOTP secret; a second run reuses the data (no second seat, no second
deployment); Ctrl-C stops everything, the deployment's replicas included; a
process that dies, or ``modelseal up`` itself killed with -9, leaves nothing
running behind.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pyotp
import pytest

from modelseal.envelope import MEDIA_TYPE
from modelseal.system import demo_model
from modelseal.system.stack import SystemOptions, SystemStack

START_TIMEOUT = 240.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Ports:
    controlplane: int
    gateway: int
    #: the deployment's NodePort: a free port is above 32767 here, so this also
    #: checks that the platform's NodePort range is widened to hold it
    node: int

    def args(self) -> list[str]:
        return [
            "--controlplane-port",
            str(self.controlplane),
            "--gateway-port",
            str(self.gateway),
            "--node-port",
            str(self.node),
        ]

    def all_free(self) -> bool:
        for port in (self.controlplane, self.gateway, self.node):
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


def printed(output: str, label: str) -> str:
    """A value of the printed summary (``  label:  value``)."""
    for line in output.splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and name == label:
            return value.strip()
    raise AssertionError(f"{label!r} not printed:\n{output[-3000:]}")


def owner_login(prepared: Prepared, output: str) -> httpx.Response:
    """Log in as a person with the printed password and a code from the printed TOTP secret."""
    secret = printed(output, "TOTP secret")
    # A code is accepted once, and for one step either side: the next step's code
    # is valid now and not the one `up` used to confirm the enrolment.
    code = pyotp.TOTP(secret).at(time.time() + 30)
    return httpx.post(
        f"http://127.0.0.1:{prepared.ports.controlplane}/v1/session",
        json={
            "vendor": printed(output, "vendor"),
            "username": printed(output, "username"),
            "password": printed(output, "password"),
            "totp": code,
        },
        timeout=30,
    )


def test_the_first_run_sets_up_the_whole_flow_with_public_commands(prepared: Prepared) -> None:
    out = prepared.first_output
    # each step is a documented command, shown to the user as it runs
    for command in (
        "modelseal controlplane init",
        "--admin-password-file",
        "modelseal seal",
        "modelseal admin orders create",
        "modelseal device activate",
        "modelseal controlplane --data-dir",
        "--workers 1",
        "modelseal platform vendors create",
        "modelseal platform models create",
        "modelseal platform documents upload",
        "modelseal platform gateway-key create",
        "modelseal platform configs create",
        "modelseal platform deployments create",
        "modelseal platform keys create",
        "modelseal gateway --controlplane",
        "POST /v1/session/totp/confirm",
    ):
        assert command in out, command
    assert "modelseal serve" not in out, "the platform runs the model service, not up itself"
    assert f"http://127.0.0.1:{prepared.ports.controlplane}/console/" in out
    assert printed(out, "otpauth URI").startswith("otpauth://totp/")
    assert "stopped (--once)" in out
    assert prepared.ports.all_free()
    # the vendor keeps no plaintext model and secrets are private
    assert not list(prepared.data_dir.rglob("*.onnx"))
    secrets = prepared.data_dir / "secrets"
    assert secrets.stat().st_mode & 0o777 == 0o700
    for name in (
        "demo-api-key",
        "owner.token",
        "owner.password",
        "owner.totp",
        "owner.recovery-codes",
        "gateway.token",
    ):
        assert (secrets / name).stat().st_mode & 0o777 == 0o600, name
    assert (secrets / "owner.password").read_text().strip() == printed(out, "password")
    assert (secrets / "owner.totp").read_text().strip() == printed(out, "TOTP secret")


def test_the_printed_curl_line_predicts_through_the_gateway_and_ctrl_c_stops_all(
    prepared: Prepared, running: Running
) -> None:
    out = running.output()
    for step in ("controlplane init", "device activate", "vendors create", "keys create"):
        assert step not in out, f"set-up repeated: {step}"
    state = json.loads((prepared.data_dir / "system.json").read_text())
    assert state["license_id"] in out and state["deployment_id"] in out
    # the second run prints the same login
    for label in ("vendor", "username", "password", "TOTP secret", "otpauth URI"):
        assert printed(out, label) == printed(prepared.first_output, label), label

    line = running.curl_line()
    assert line is not None
    answer = subprocess.run(
        shlex.split(line), capture_output=True, text=True, timeout=60, check=True
    )
    body = json.loads(answer.stdout)
    got = np.asarray(body["outputs"][0]["data"], np.float32)
    want = demo_model.expected(np.asarray([demo_model.SAMPLE], np.float32))[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # the deployment's NodePort (the model service itself) answers only envelopes
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
            f"http://127.0.0.1:{prepared.ports.node}/v2/models/demo/infer",
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

    # the printed login works: password + TOTP make a person's session with MFA
    login = owner_login(prepared, out)
    assert login.status_code == 200, login.text
    assert login.json()["mfa"] is True
    # the printed console URL is the console: its login page for a stranger, the
    # dashboard for the owner's session
    found = re.search(r"^\s+console\s+(\S+)$", out, re.M)
    assert found is not None, out[-3000:]
    console = found.group(1)
    assert console == f"http://127.0.0.1:{prepared.ports.controlplane}/console/"
    stranger = httpx.get(console, timeout=30, follow_redirects=True)
    assert stranger.status_code == 200 and 'name="password"' in stranger.text
    dashboard = httpx.get(console, cookies=login.cookies, timeout=30, follow_redirects=False)
    assert dashboard.status_code == 200, dashboard.text[:500]
    assert 'name="password"' not in dashboard.text
    # ... and the data was reused: one deployment, one seat
    cp = f"http://127.0.0.1:{prepared.ports.controlplane}"
    token = (prepared.data_dir / "secrets" / "owner.token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    deployments = httpx.get(f"{cp}/v1/platform/deployments", headers=auth, timeout=30).json()
    assert [d["id"] for d in deployments] == [state["deployment_id"]]
    devices = httpx.get(
        f"{cp}/v1/licenses/{state['license_id']}/devices", headers=auth, timeout=30
    ).json()
    assert len(devices) == 1, devices

    children = running.children()
    # the control plane, the gateway, and the deployment's replica under the control plane
    assert len(children) >= 3, [c.cmdline() for c in children]
    assert any("serve" in c.cmdline() for c in children), [c.cmdline() for c in children]
    running.proc.send_signal(signal.SIGINT)
    assert running.proc.wait(90) == 0, running.output()[-2000:]
    assert not wait_gone(children), "a process outlived modelseal up"
    assert prepared.ports.all_free()
    assert "stopped; run it again" in running.output()


def test_a_process_that_dies_stops_the_rest_with_a_clear_error(running: Running) -> None:
    children = running.children()
    gateway = [c for c in children if c.cmdline()[3:4] == ["gateway"]]
    assert gateway, [c.cmdline() for c in children]
    gateway[0].kill()
    code = running.proc.wait(90)
    assert code == 31, running.output()[-2000:]
    assert "gateway exited with code -9" in running.output()
    assert not wait_gone(children)


def test_kill_9_of_modelseal_up_leaves_nothing_running(
    running: Running, prepared: Prepared
) -> None:
    children = running.children()
    assert any("serve" in c.cmdline() for c in children), "no replica to check"
    running.proc.kill()
    running.proc.wait(30)
    # PR_SET_PDEATHSIG gives the control plane SIGTERM; it stops its replicas as it exits
    assert not wait_gone(children, timeout=60), "a server or replica outlived modelseal up"
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


@pytest.mark.parametrize(
    ("which", "flag", "says"),
    [
        ("controlplane", "--controlplane-port", "heartbeats to"),
        ("node", "--node-port", "holds NodePort"),
    ],
)
def test_a_data_dir_bound_to_other_ports_is_refused(
    prepared: Prepared, which: str, flag: str, says: str
) -> None:
    other = Ports(prepared.ports.controlplane, prepared.ports.gateway, prepared.ports.node)
    setattr(other, which, free_port())
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
    assert says in done.stderr and flag in done.stderr
    assert "Starting" not in done.stdout


def test_a_run_stopped_after_the_totp_confirmation_recovers_the_kept_secret(
    tmp_path: Path,
) -> None:
    """The secret is written before the confirmation: a crash between the two loses nothing.

    Its own data directory: checking the kept secret logs in with a TOTP code,
    and a code is accepted once, so it must not race the printed-login test.
    """
    ports = Ports(free_port(), free_port(), free_port())
    data = tmp_path / "data"
    command = [
        sys.executable,
        "-m",
        "modelseal",
        "up",
        "--data-dir",
        str(data),
        *ports.args(),
        "--once",
    ]
    first = subprocess.run(
        command, capture_output=True, text=True, env=_env(tmp_path), timeout=START_TIMEOUT
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    state_file = data / "system.json"
    state = json.loads(state_file.read_text())
    del state["totp_enrolled"], state["otpauth_uri"]  # as if stopped right after confirming
    state_file.write_text(json.dumps(state))

    again = subprocess.run(
        command, capture_output=True, text=True, env=_env(tmp_path), timeout=START_TIMEOUT
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "(checking the kept secret)" in again.stdout
    assert "POST /v1/session/totp\n" not in again.stdout  # no second enrolment
    for label in ("password", "TOTP secret"):
        assert printed(again.stdout, label) == printed(first.stdout, label)
    assert printed(again.stdout, "otpauth URI") == printed(first.stdout, "otpauth URI")
    assert json.loads(state_file.read_text())["totp_enrolled"] is True


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8400"),
        ("::", "http://[::1]:8400"),
        ("127.0.0.1", "http://127.0.0.1:8400"),
        ("::1", "http://[::1]:8400"),
        ("192.0.2.7", "http://192.0.2.7:8400"),
    ],
)
def test_a_wildcard_host_is_reached_through_loopback(tmp_path: Path, host: str, url: str) -> None:
    """Rule: ``--host 0.0.0.0`` (or ``::``) is where servers listen, never an address
    written into the license's heartbeat URL or handed to the gateway."""
    stack = SystemStack(SystemOptions(data_dir=tmp_path, host=host), report=lambda _: None)
    assert stack.controlplane_url == url
    assert stack.gateway_url == url.replace(":8400", ":8000")
