"""The whole system on this machine: control plane, a licensed model service, the gateway.

``modelseal up`` is how a newcomer sees modelseal work end to end with one
command, so it is built from the same public commands a vendor and a model
manager type (each one is echoed as it runs): the control plane is
initialised, a demo model is sealed and registered, a license is ordered
and this machine activates it online, ``modelseal serve`` runs the sealed
model with encrypted outputs, and ``modelseal gateway`` decrypts them for
holders of a demo API key. Nothing here reaches into the servers'
internals; a change that breaks this flow breaks the documented commands.

Everything lives in one data directory, and every set-up step records its
result in ``system.json`` there, so a second run reuses the vendor, the
license and the keys (no second seat is taken) and only starts processes.
The processes run with ``PR_SET_PDEATHSIG`` so they never outlive this one,
even when it is killed with ``kill -9``; a clean stop (Ctrl-C, SIGTERM)
stops them in reverse order with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from modelseal._fs import write_file
from modelseal.errors import ListenError, ModelsealError
from modelseal.system import demo_model

#: Bumped when the layout of the data directory changes incompatibly.
STATE_VERSION: Final = 1
ROUTE_ID: Final = "demo"
VENDOR: Final = "demo-vendor"
CUSTOMER: Final = "Demo Hospital"
PLAN: Final = "demo"
FEATURE: Final = "classify"
#: Time a process gets between SIGTERM and SIGKILL when the system stops.
STOP_GRACE_S: Final = 10.0


class SystemRunError(ModelsealError):
    """A step of ``modelseal up`` failed or one of its processes died (exit code 31).

    The message names the step or process and ends with the last line it
    printed; the full output is in the data directory's ``logs/``.
    """

    exit_code = 31


class SystemStateError(SystemRunError):
    """The data directory cannot be reused as asked (another layout, other ports)."""

    exit_code = 2


@dataclass(frozen=True)
class SystemOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    controlplane_port: int = 8400
    gateway_port: int = 8000
    serve_port: int = 8080
    #: The interpreter that runs ``-m modelseal`` for every step and process.
    python: str = sys.executable
    startup_timeout_s: float = 120.0


@dataclass(frozen=True)
class Layout:
    """Where everything lives under the data directory."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "system.json"

    @property
    def controlplane(self) -> Path:
        return self.root / "controlplane"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def owner_token(self) -> Path:
        return self.secrets / "owner.token"

    @property
    def api_key(self) -> Path:
        return self.secrets / "demo-api-key"

    @property
    def content_key(self) -> Path:
        return self.secrets / "demo.key"

    @property
    def gateway_private_key(self) -> Path:
        return self.secrets / "gateway-sm2.pem"

    @property
    def gateway_public_key(self) -> Path:
        return self.secrets / "gateway-sm2.pub"

    @property
    def model(self) -> Path:
        return self.root / "models" / "demo.mseal"

    @property
    def device(self) -> Path:
        return self.root / "device"

    @property
    def license(self) -> Path:
        return self.device / "license.jwt"

    @property
    def trust(self) -> Path:
        return self.device / "vendor.json"

    @property
    def routes(self) -> Path:
        return self.root / "gateway" / "routes.yaml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def make(self) -> None:
        for folder in (self.controlplane, self.model.parent, self.device, self.routes.parent):
            folder.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.secrets, 0o700)


@dataclass
class Summary:
    """What a user needs once the system is up; printed by the CLI."""

    controlplane_url: str
    gateway_url: str
    serve_url: str
    owner_token: Path
    api_key: str
    license_id: str
    license_key: str
    logs: Path
    prediction: list[float] = field(default_factory=list)

    @property
    def infer_url(self) -> str:
        return f"{self.gateway_url}/{ROUTE_ID}/v2/models/{demo_model.MODEL_NAME}/infer"

    def infer_body(self) -> str:
        return json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "data": list(demo_model.SAMPLE),
                    }
                ]
            },
            separators=(",", ":"),
        )

    def curl_line(self) -> str:
        """A shell line that asks the gateway for a prediction with the demo API key."""
        return shlex.join(
            [
                "curl",
                "-sS",
                "-H",
                f"Authorization: Bearer {self.api_key}",
                "-H",
                "Content-Type: application/json",
                "-d",
                self.infer_body(),
                self.infer_url,
            ]
        )


Report = Callable[[str], None]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this child when ``modelseal up`` dies, even by ``kill -9``."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


class _Process:
    """One long-running ``modelseal`` server, its log file and its readiness URL."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path, ready_url: str):
        self.name = name
        self.proc = proc
        self.log = log
        self.ready_url = ready_url

    def tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class SystemStack:
    """Set up (once) and run the whole system in one data directory."""

    def __init__(self, options: SystemOptions, report: Report, *, echo: Report | None = None):
        self.options = options
        self.layout = Layout(options.data_dir)
        self._report = report
        self._echo = echo or report
        self._processes: list[_Process] = []
        self._state: dict[str, Any] = {}

    # -- urls ------------------------------------------------------------------------------------

    def _url(self, port: int) -> str:
        host = f"[{self.options.host}]" if ":" in self.options.host else self.options.host
        return f"http://{host}:{port}"

    @property
    def controlplane_url(self) -> str:
        return self._url(self.options.controlplane_port)

    @property
    def gateway_url(self) -> str:
        return self._url(self.options.gateway_port)

    @property
    def serve_url(self) -> str:
        return self._url(self.options.serve_port)

    # -- state -----------------------------------------------------------------------------------

    def _load_state(self) -> None:
        path = self.layout.state_file
        if not path.exists():
            self._state = {"version": STATE_VERSION}
            return
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SystemStateError(
                f"{path} is unreadable ({exc}); remove the data directory to start afresh"
            ) from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise SystemStateError(
                f"{path} was written by another version of modelseal up; "
                "remove the data directory to start afresh"
            )
        recorded = state.get("controlplane_url")
        if recorded and recorded != self.controlplane_url:
            # The license names its heartbeat URL: a control plane elsewhere would
            # leave the model service heartbeating into nothing.
            raise SystemStateError(
                f"this data directory's license heartbeats to {recorded}; start with the same "
                f"--controlplane-port (and --host), or use another --data-dir"
            )
        self._state = state

    def _save(self, **values: Any) -> None:
        self._state.update(values)
        self._state["controlplane_url"] = self.controlplane_url
        write_file(
            self.layout.state_file,
            (json.dumps(self._state, indent=2, sort_keys=True) + "\n").encode(),
            mode=0o600,
            overwrite=True,
        )

    # -- steps -----------------------------------------------------------------------------------

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("COLUMNS", "200")
        env.update(extra)
        return env

    def _admin_env(self) -> dict[str, str]:
        return self._env(
            MODELSEAL_SERVER=self.controlplane_url,
            MODELSEAL_TOKEN_FILE=str(self.layout.owner_token),
        )

    def _device_env(self) -> dict[str, str]:
        return self._env(MODELSEAL_STATE_DIR=str(self.layout.device / "state"))

    def _cli(self, args: Sequence[str], *, env: dict[str, str] | None = None) -> str:
        """Run one ``modelseal`` command as a user would, echoing it; return its stdout."""
        self._echo("$ modelseal " + shlex.join(args))
        try:
            done = subprocess.run(
                [self.options.python, "-m", "modelseal", *args],
                capture_output=True,
                text=True,
                env=env or self._env(),
                timeout=self.options.startup_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SystemRunError(
                f"'modelseal {args[0]} {args[1] if len(args) > 1 else ''}' did not finish in "
                f"{self.options.startup_timeout_s:.0f}s"
            ) from None
        if done.returncode != 0:
            raise SystemRunError(
                f"'modelseal {shlex.join(args[:3])} ...' failed (exit {done.returncode}): "
                f"{_last_line(done.stderr or done.stdout)}"
            )
        return done.stdout

    def _cli_json(self, args: Sequence[str], *, env: dict[str, str] | None = None) -> Any:
        text = self._cli([*args, "--json"], env=env)
        try:
            return json.loads(text)
        except ValueError:
            raise SystemRunError(
                f"'modelseal {shlex.join(args[:3])}' printed no JSON: {_last_line(text)}"
            ) from None

    def _init_controlplane(self) -> None:
        if self._state.get("initialized"):
            return
        if self.layout.owner_token.exists():
            raise SystemStateError(
                f"{self.layout.owner_token} exists but {self.layout.state_file} does not record "
                "the set-up; remove the data directory to start afresh"
            )
        self._report("Setting up the control plane (SQLite in the data directory)")
        self._cli(
            [
                "controlplane",
                "init",
                "--data-dir",
                str(self.layout.controlplane),
                "--vendor",
                VENDOR,
                "--token-out",
                str(self.layout.owner_token),
            ]
        )
        self._save(initialized=True)

    def _seal_demo_model(self) -> None:
        if self._state.get("sealed"):
            return
        self._report("Vendor: building and sealing the demo model")
        for stale in (self.layout.model, self.layout.content_key):
            stale.unlink(missing_ok=True)  # a run interrupted between the two writes
        plain = self.layout.model.with_suffix(".onnx")
        demo_model.write_onnx(plain)
        try:
            self._cli(
                [
                    "seal",
                    str(plain),
                    "--out",
                    str(self.layout.model),
                    "--new-key-out",
                    str(self.layout.content_key),
                    "--model-id",
                    demo_model.MODEL_ID,
                ]
            )
        finally:
            plain.unlink(missing_ok=True)  # the vendor keeps no plaintext copy around
        self._save(sealed=True)

    def _catalog(self) -> None:
        admin = self._admin_env()
        if "plan_id" not in self._state:
            self._report("Vendor: a plan, a customer, the model, an order")
            plan = self._cli_json(
                [
                    "admin",
                    "plans",
                    "create",
                    "--name",
                    PLAN,
                    "--kind",
                    "subscription",
                    "--days",
                    "365",
                    "--features",
                    FEATURE,
                    "--max-devices",
                    "3",
                    "--heartbeat",
                    "30s",
                    "--grace",
                    "72h",
                ],
                env=admin,
            )
            self._save(plan_id=plan["id"])
        if "customer_id" not in self._state:
            customer = self._cli_json(
                ["admin", "customers", "create", "--name", CUSTOMER], env=admin
            )
            self._save(customer_id=customer["id"])
        if "model_ref" not in self._state:
            model = self._cli_json(
                [
                    "admin",
                    "models",
                    "add",
                    str(self.layout.model),
                    "--content-key",
                    str(self.layout.content_key),
                    "--name",
                    "Demo iris classifier",
                ],
                env=admin,
            )
            self._save(model_ref=model["id"])
        if "license_id" not in self._state:
            made = self._cli_json(
                [
                    "admin",
                    "orders",
                    "create",
                    "--customer",
                    self._state["customer_id"],
                    "--plan",
                    self._state["plan_id"],
                    "--model",
                    self._state["model_ref"],
                    "--idempotency-key",
                    f"modelseal-up-{self._state['customer_id']}",
                ],
                env=admin,
            )
            self._save(license_id=made["license_id"], license_key=made["license_key"])
        if not self._state.get("trust_exported"):
            self.layout.trust.unlink(missing_ok=True)
            self._cli(["admin", "keys", "export-trust", "--out", str(self.layout.trust)], env=admin)
            self._save(trust_exported=True)

    def _activate_device(self) -> None:
        if self._state.get("activated"):
            return
        self._report("Customer: activating this machine online with the license key")
        self._cli(
            [
                "device",
                "activate",
                "--server",
                self.controlplane_url,
                "--key",
                self._state["license_key"],
                "--out",
                str(self.layout.license),
                "--label",
                "modelseal up",
                "--force",  # a run interrupted after the write: the server hands the same seat back
            ],
            env=self._device_env(),
        )
        self._save(activated=True)

    def _gateway_config(self) -> None:
        if not self._state.get("gateway_key"):
            self._report("Model manager: the gateway's SM2 key pair and a demo API key")
            for stale in (self.layout.gateway_private_key, self.layout.gateway_public_key):
                stale.unlink(missing_ok=True)
            self._cli(
                [
                    "keys",
                    "generate",
                    "--alg",
                    "sm2",
                    "--out-dir",
                    str(self.layout.secrets),
                    "--name",
                    "gateway-sm2",
                ]
            )
            self._save(gateway_key=True)
        if not self._state.get("api_key_made"):
            made = self._cli_json(
                ["gateway", "keys", "create", "--name", "demo-user", "--routes", ROUTE_ID]
            )
            write_file(
                self.layout.api_key, (made["key"] + "\n").encode(), mode=0o600, overwrite=True
            )
            self._save(api_key_made=True, api_key_entry=made["entry"])
        # Rewritten on every start: the model service's port may differ between runs.
        routes = {
            "version": 1,
            "routes": [
                {
                    "id": ROUTE_ID,
                    "name": "Demo iris classifier",
                    "prefix": f"/{ROUTE_ID}",
                    "forward_url": self.serve_url,
                    "strip_prefix": True,
                    "decrypt": True,
                    "timeout_s": 30,
                }
            ],
            "api_keys": [self._state["api_key_entry"]],
        }
        # JSON is YAML: the routes file parser reads it, and it needs no YAML writer here.
        write_file(
            self.layout.routes, (json.dumps(routes, indent=2) + "\n").encode(), overwrite=True
        )

    # -- processes -------------------------------------------------------------------------------

    def _spawn(
        self, name: str, args: Sequence[str], ready_url: str, env: dict[str, str] | None = None
    ) -> _Process:
        log = self.layout.logs / f"{name}.log"
        self._echo("$ modelseal " + shlex.join(args) + f"  (log: {log})")
        handle: IO[bytes]
        with log.open("ab") as handle:
            proc = subprocess.Popen(
                [self.options.python, "-m", "modelseal", *args],
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env or self._env(),
                # Ctrl-C at the terminal reaches only us; we stop them in order.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        process = _Process(name, proc, log, ready_url)
        self._processes.append(process)
        self._wait_ready(process)
        return process

    def _wait_ready(self, process: _Process) -> None:
        deadline = time.monotonic() + self.options.startup_timeout_s
        while time.monotonic() < deadline:
            code = process.proc.poll()
            if code is not None:
                raise SystemRunError(
                    f"{process.name} exited with code {code} while starting: "
                    f"{_last_line(process.tail())} (full log: {process.log})"
                )
            try:
                with urllib.request.urlopen(process.ready_url, timeout=2):  # noqa: S310
                    return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return  # it answers (a gateway's /healthz may want nothing more)
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemRunError(
            f"{process.name} was not ready within {self.options.startup_timeout_s:.0f}s "
            f"(log: {process.log})"
        )

    def _check_ports(self) -> None:
        wanted = {
            "control plane": self.options.controlplane_port,
            "model service": self.options.serve_port,
            "gateway": self.options.gateway_port,
        }
        if len(set(wanted.values())) != len(wanted):
            raise SystemStateError(f"the three ports must differ: {wanted}")
        for what, port in wanted.items():
            if not _port_free(self.options.host, port):
                flag = {"control plane": "controlplane", "model service": "serve"}.get(what, what)
                raise ListenError(
                    f"{self.options.host}:{port} ({what}) is already in use; "
                    f"choose another with --{flag}-port"
                )

    def _self_check(self, summary: Summary) -> None:
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            summary.infer_url,
            data=summary.infer_body().encode(),
            headers={
                "Authorization": f"Bearer {summary.api_key}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise SystemRunError(
                f"the first prediction through the gateway failed: HTTP {exc.code} "
                f"{exc.read(500).decode(errors='replace')}"
            ) from None
        except (OSError, ValueError) as exc:
            raise SystemRunError(
                f"the first prediction through the gateway failed: {exc}"
            ) from None
        try:
            data = [float(v) for v in answer["outputs"][0]["data"]]
        except (KeyError, IndexError, TypeError, ValueError):
            raise SystemRunError(f"the gateway's answer is not a prediction: {answer}") from None
        import numpy as np

        want = demo_model.expected(np.asarray([demo_model.SAMPLE], np.float32))[0]
        if not np.allclose(np.asarray(data, np.float32), want, rtol=1e-5, atol=1e-6):
            raise SystemRunError(f"the gateway answered {data}, the model computes {want.tolist()}")
        summary.prediction = data

    def start(self) -> Summary:
        """Set up what is missing, start the three processes, check a prediction end to end."""
        self._check_ports()
        self.layout.make()
        self._load_state()
        try:
            self._init_controlplane()
            self._report(f"Starting the control plane on {self.controlplane_url}")
            self._spawn(
                "controlplane",
                [
                    "controlplane",
                    "--data-dir",
                    str(self.layout.controlplane),
                    "--host",
                    self.options.host,
                    "--port",
                    str(self.options.controlplane_port),
                ],
                self.controlplane_url + "/readyz",
            )
            self._seal_demo_model()
            self._catalog()
            self._activate_device()
            self._gateway_config()
            self._report(f"Starting the model service on {self.serve_url} (outputs encrypted)")
            self._spawn(
                "serve",
                [
                    "serve",
                    str(self.layout.model),
                    "--license",
                    str(self.layout.license),
                    "--trust",
                    str(self.layout.trust),
                    "--name",
                    demo_model.MODEL_NAME,
                    "--envelope-key",
                    str(self.layout.gateway_public_key),
                    "--host",
                    self.options.host,
                    "--port",
                    str(self.options.serve_port),
                ],
                self.serve_url + "/v2/health/ready",
                env=self._device_env(),
            )
            self._report(f"Starting the gateway on {self.gateway_url}")
            self._spawn(
                "gateway",
                [
                    "gateway",
                    "--routes",
                    str(self.layout.routes),
                    "--envelope-private-key",
                    str(self.layout.gateway_private_key),
                    "--host",
                    self.options.host,
                    "--port",
                    str(self.options.gateway_port),
                ],
                self.gateway_url + "/healthz",
            )
            summary = Summary(
                controlplane_url=self.controlplane_url,
                gateway_url=self.gateway_url,
                serve_url=self.serve_url,
                owner_token=self.layout.owner_token,
                api_key=self.layout.api_key.read_text().strip(),
                license_id=str(self._state["license_id"]),
                license_key=str(self._state["license_key"]),
                logs=self.layout.logs,
            )
            self._self_check(summary)
        except BaseException:
            self.stop()
            raise
        return summary

    def watch(self, should_stop: Callable[[], bool], interval_s: float = 0.5) -> None:
        """Block until ``should_stop()``; a process that dies stops the rest and raises."""
        while not should_stop():
            for process in self._processes:
                code = process.proc.poll()
                if code is not None:
                    tail = process.tail()
                    self.stop()
                    raise SystemRunError(
                        f"{process.name} exited with code {code}: {_last_line(tail)} "
                        f"(full log: {process.log})"
                    )
            time.sleep(interval_s)

    def stop(self) -> None:
        """Stop every process, the last started first (the gateway before its upstream)."""
        while self._processes:
            self._processes.pop().stop()


__all__ = [
    "Layout",
    "Summary",
    "SystemOptions",
    "SystemRunError",
    "SystemStack",
    "SystemStateError",
]
