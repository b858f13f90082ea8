"""The whole system on this machine: control plane, a model deployed by the platform, the gateway.

``modelseal up`` is how a newcomer sees modelseal work end to end with one
command, so it is built from the same public commands a vendor and a model
manager type (each one is echoed as it runs):

* the **vendor** initialises the control plane (its owner, a person, gets a
  generated password and enrols TOTP through the session API), seals a demo
  model, creates a plan, a customer and an order;
* the **customer** activates this machine online with the license key;
* the **model manager** registers the model vendor, the model, a usage
  document and a deployment config in the Platform API, creates the
  gateway's key pair there, deploys the config with the ``local`` backend
  (the control plane supervises ``modelseal serve`` replicas behind a
  NodePort), makes an API key for a model user and an issuer token for the
  gateway; ``modelseal gateway --controlplane`` follows the control plane's
  routes and decrypts the model service's envelopes for holders of the key.

Nothing here reaches into the servers' internals; a change that breaks this
flow breaks the documented commands.

Everything lives in one data directory, and every set-up step records its
result in ``system.json`` there, so a second run reuses the vendor, the
license, the deployment and the keys (no second seat, no second deployment:
the deployment is applied again in place, because the local backend's
replicas stop with the control plane process that supervised them).

Processes: the control plane and the gateway run with ``PR_SET_PDEATHSIG``
so they get SIGTERM when this process dies, even by ``kill -9``; the control
plane then stops its deployments' replicas as it shuts down (the local
backend's ``close``). A clean stop (Ctrl-C, SIGTERM) stops the gateway, then
the control plane, with SIGTERM, then SIGKILL after a grace period long
enough for the control plane to stop its replicas first.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.cookiejar
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from modelseal._fs import write_file
from modelseal.errors import ListenError, ModelsealError
from modelseal.system import demo_model

#: Bumped when the layout of the data directory changes incompatibly (2: the
#: model is deployed through the platform; the owner has a password and TOTP).
STATE_VERSION: Final = 2
#: The deployment's name: also its gateway route id and path prefix.
ROUTE_ID: Final = "demo"
VENDOR: Final = "demo-vendor"
OWNER: Final = "owner"
CUSTOMER: Final = "Demo Hospital"
PLAN: Final = "demo"
FEATURE: Final = "classify"
#: The model vendor as the model manager's registry knows it.
MODEL_VENDOR: Final = "Demo Vendor"
DEPLOY_CONFIG: Final = "demo"
#: Kubernetes' default NodePort range; the local backend's NodePort is in it unless asked otherwise.
NODE_PORT_RANGE: Final = (30000, 32767)
#: Time a process gets between SIGTERM and SIGKILL when the system stops.
STOP_GRACE_S: Final = 10.0
#: The control plane stops its replicas (SIGTERM, then SIGKILL after 30 s: the
#: local backend's policy) before it exits; killing it sooner would orphan them.
CONTROLPLANE_STOP_GRACE_S: Final = 45.0

#: The deployment spec the model manager stores (docs/deploy.md). The image is
#: never pulled by the local backend; it documents what a cluster would run.
DEPLOYMENT_SPEC: Final = """\
apiVersion: modelseal/v1
kind: ModelDeployment
metadata: {{name: {name}, namespace: demo}}
spec:
  model: {{name: {model}, version: "1.0.0"}}
  image: registry.example.com/demo-vendor/iris-classifier:1.0.0
  containerPort: 8080
  command: ["modelseal", "serve", "/models/demo.mseal", "--name", "{model}", "--port", "8080"]
  replicas: 1
  volumes: [{{name: models, hostPath: "{models}", mountPath: /models}}]
  license: {{file: license.jwt}}
  envelopeKey: {{file: gateway-sm2.pub}}
  trust: {{file: vendor.json}}
  route: {{prefix: /{name}}}
"""

USAGE_DOCUMENT: Final = """\
# Demo iris classifier: usage

POST /{route}/v2/models/{model}/infer on the gateway, with a model user's API key:

    {{"inputs": [{{"name": "x", "shape": [1, 4], "datatype": "FP32",
                 "data": [5.1, 3.5, 1.4, 0.2]}}]}}

The answer holds `probabilities` for the classes {classes}.
"""


class SystemRunError(ModelsealError):
    """A step of ``modelseal up`` failed or one of its processes died (exit code 31).

    The message names the step or process and ends with the last line it
    printed; the full output is in the data directory's ``logs/``.
    """

    exit_code = 31


class SystemStateError(SystemRunError):
    """The data directory cannot be reused as asked (another layout, other ports)."""

    exit_code = 2


#: Bind-to-all addresses and the loopback address a local client uses instead.
_LOOPBACK_FOR_WILDCARD = {
    "0.0.0.0": "127.0.0.1",  # noqa: S104 - recognised here, never bound
    "": "127.0.0.1",
    "::": "::1",
}


@dataclass(frozen=True)
class SystemOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    controlplane_port: int = 8400
    gateway_port: int = 8000
    #: The demo deployment's NodePort (the local backend listens on it).
    node_port: int = 30080
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
    def owner_password(self) -> Path:
        return self.secrets / "owner.password"

    @property
    def owner_totp(self) -> Path:
        """The owner's TOTP secret (base32), for an authenticator app or ``pyotp``."""
        return self.secrets / "owner.totp"

    @property
    def owner_recovery_codes(self) -> Path:
        return self.secrets / "owner.recovery-codes"

    @property
    def gateway_token(self) -> Path:
        return self.secrets / "gateway.token"

    @property
    def api_key(self) -> Path:
        return self.secrets / "demo-api-key"

    @property
    def content_key(self) -> Path:
        return self.secrets / "demo.key"

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
    def device_state(self) -> Path:
        return self.device / "state"

    @property
    def license(self) -> Path:
        return self.device / "license.jwt"

    @property
    def trust(self) -> Path:
        return self.device / "vendor.json"

    @property
    def platform(self) -> Path:
        """What the model manager hands the platform: the deployment spec, the usage document."""
        return self.root / "platform"

    @property
    def deployment_spec(self) -> Path:
        return self.platform / "demo-deployment.yaml"

    @property
    def usage_document(self) -> Path:
        return self.platform / "usage.md"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def make(self) -> None:
        for folder in (self.controlplane, self.model.parent, self.device, self.platform):
            folder.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.secrets, 0o700)


@dataclass
class AdminLogin:
    """The first owner's console login: password, then a TOTP code."""

    vendor: str
    username: str
    password: str
    totp_secret: str
    otpauth_uri: str
    recovery_codes: Path


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
    deployment_id: str
    logs: Path
    admin: AdminLogin
    prediction: list[float] = field(default_factory=list)

    @property
    def console_url(self) -> str:
        return f"{self.controlplane_url}/console/"

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

    def admin_command(self) -> str:
        """A shell line that uses the owner's API token (a service token, not a person)."""
        return (
            f"MODELSEAL_SERVER={self.controlplane_url} "
            f"MODELSEAL_TOKEN_FILE={shlex.quote(str(self.owner_token))} "
            "modelseal admin licenses list"
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


def node_port_range(port: int) -> str:
    """The control plane's NodePort range: Kubernetes' default, widened to hold ``port``.

    A user (or a test on free ports) may ask for a NodePort outside
    30000-32767; the platform refuses ports outside its range, so the range
    grows to include it rather than the demo failing.
    """
    low, high = NODE_PORT_RANGE
    return f"{min(low, port)}-{max(high, port)}"


class _Process:
    """One long-running ``modelseal`` server, its log file and its readiness URL."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        log: Path,
        ready_url: str,
        grace_s: float = STOP_GRACE_S,
    ):
        self.name = name
        self.proc = proc
        self.log = log
        self.ready_url = ready_url
        self.grace_s = grace_s

    def tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(self.grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class _RefusedError(SystemRunError):
    """The control plane answered a session call with an error (its body kept for the caller)."""

    def __init__(self, message: str, body: str) -> None:
        super().__init__(message)
        self.body = body


class _SessionClient:
    """A person's browser-like session against the control plane (cookie + CSRF header).

    Only what the first login needs: the session API is the one the console
    uses, so enrolling TOTP here is what a person does there.
    """

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.csrf = ""
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            self.base_url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode(errors="replace")
            raise _RefusedError(f"POST {path} answered HTTP {exc.code}: {detail}", detail) from None
        except (OSError, ValueError) as exc:
            raise SystemRunError(f"POST {path} failed: {exc}") from None


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
        """Where this machine's clients reach a server listening on ``--host``.

        A wildcard bind address is not somewhere to connect to: the license's
        heartbeat URL, the gateway's control-plane URL and the printed lines
        would name ``0.0.0.0``. Those clients all run on this machine, so a
        wildcard becomes the loopback address of its family.
        """
        host = _LOOPBACK_FOR_WILDCARD.get(self.options.host, self.options.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    @property
    def controlplane_url(self) -> str:
        return self._url(self.options.controlplane_port)

    @property
    def gateway_url(self) -> str:
        return self._url(self.options.gateway_port)

    @property
    def serve_url(self) -> str:
        """The deployment's NodePort (the local backend listens on loopback)."""
        return f"http://127.0.0.1:{self.options.node_port}"

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
        port = state.get("node_port")
        if port and port != self.options.node_port:
            # The platform keeps a deployment's NodePort across updates; asking for
            # another would be a second reservation, not the same deployment.
            raise SystemStateError(
                f"this data directory's deployment holds NodePort {port}; start with "
                f"--node-port {port}, or use another --data-dir"
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
        return self._env(MODELSEAL_STATE_DIR=str(self.layout.device_state))

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
        self._report("Vendor: setting up the control plane (SQLite in the data directory)")
        # Generated here and kept 0600 so the first login can be printed on every
        # run; `init` would otherwise show a generated one once, and it would be lost.
        write_file(
            self.layout.owner_password,
            (secrets.token_urlsafe(18) + "\n").encode(),
            mode=0o600,
            overwrite=True,
        )
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
                "--admin-user",
                OWNER,
                "--admin-password-file",
                str(self.layout.owner_password),
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

    def _register_on_platform(self) -> None:
        """The model manager's registry: vendor, model, a document, the gateway key, a config."""
        admin = self._admin_env()
        if "model_vendor_id" not in self._state:
            self._report("Model manager: registering the model vendor, the model and its usage")
            vendor = self._cli_json(
                [
                    "platform",
                    "vendors",
                    "create",
                    "--name",
                    MODEL_VENDOR,
                    "--business",
                    "demo models",
                ],
                env=admin,
            )
            self._save(model_vendor_id=vendor["id"])
        if "platform_model_id" not in self._state:
            model = self._cli_json(
                [
                    "platform",
                    "models",
                    "create",
                    "--vendor",
                    MODEL_VENDOR,
                    "--name",
                    demo_model.MODEL_NAME,
                    "--function",
                    "classifies iris flowers",
                    "--language",
                    "Python",
                    "--version",
                    "1.0.0",
                ],
                env=admin,
            )
            self._save(platform_model_id=model["id"])
        if "document_id" not in self._state:
            write_file(
                self.layout.usage_document,
                USAGE_DOCUMENT.format(
                    route=ROUTE_ID,
                    model=demo_model.MODEL_NAME,
                    classes=", ".join(demo_model.CLASSES),
                ).encode(),
                overwrite=True,
            )
            document = self._cli_json(
                [
                    "platform",
                    "documents",
                    "upload",
                    demo_model.MODEL_NAME,
                    str(self.layout.usage_document),
                    "--kind",
                    "usage",
                ],
                env=admin,
            )
            self._save(document_id=document["id"])
        if not self._state.get("gateway_key"):
            self._report("Model manager: the gateway's SM2 key pair, kept by the platform")
            self.layout.gateway_public_key.unlink(missing_ok=True)
            self._cli(
                [
                    "platform",
                    "gateway-key",
                    "create",
                    "--public-out",
                    str(self.layout.gateway_public_key),
                ],
                env=admin,
            )
            self._save(gateway_key=True)
        if "config_id" not in self._state:
            spec = DEPLOYMENT_SPEC.format(
                name=ROUTE_ID,
                model=demo_model.MODEL_NAME,
                models=self.layout.model.parent,
            )
            write_file(self.layout.deployment_spec, spec.encode(), overwrite=True)
            config = self._cli_json(
                [
                    "platform",
                    "configs",
                    "create",
                    "--name",
                    DEPLOY_CONFIG,
                    "-f",
                    str(self.layout.deployment_spec),
                    "--model",
                    demo_model.MODEL_NAME,
                ],
                env=admin,
            )
            self._save(config_id=config["id"])

    def _deploy(self) -> str:
        """Deploy the stored config with the local backend; wait until its replica is ready.

        Run on every start: the local backend's replicas live with the control
        plane process that supervised them, so after a restart the same
        deployment is applied again in place (same id, same NodePort, same route).
        """
        admin = self._admin_env()
        self._report(
            f"Model manager: deploying '{DEPLOY_CONFIG}' with the local backend "
            f"(NodePort {self.options.node_port})"
        )
        made = self._cli_json(
            [
                "platform",
                "deployments",
                "create",
                "--config",
                DEPLOY_CONFIG,
                "--license",
                str(self.layout.license),
                "--trust",
                str(self.layout.trust),
                "--node-port",
                str(self.options.node_port),
            ],
            env=admin,
        )
        deployment_id = str(made["id"])
        recorded = self._state.get("deployment_id")
        if recorded and recorded != deployment_id:
            raise SystemRunError(
                f"the platform made a second deployment ({deployment_id}, not {recorded}); "
                "remove the data directory to start afresh"
            )
        self._save(deployment_id=deployment_id, node_port=self.options.node_port)
        self._echo(f"$ modelseal platform deployments status {ROUTE_ID}  (until ready)")
        deadline = time.monotonic() + self.options.startup_timeout_s
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            done = subprocess.run(
                [
                    self.options.python,
                    "-m",
                    "modelseal",
                    "platform",
                    "deployments",
                    "status",
                    ROUTE_ID,
                    "--json",
                ],
                capture_output=True,
                text=True,
                env=admin,
                timeout=self.options.startup_timeout_s,
                check=False,
            )
            if done.returncode == 0:
                with contextlib.suppress(ValueError):
                    status = json.loads(done.stdout)
                if status.get("ready"):
                    return deployment_id
                if status.get("phase") == "Failed":
                    raise SystemRunError(
                        f"the deployment failed: {status.get('message') or status}"
                    )
            time.sleep(0.5)
        raise SystemRunError(
            f"the deployment was not ready within {self.options.startup_timeout_s:.0f}s: "
            f"{status.get('message') or status} (modelseal platform deployments logs {ROUTE_ID})"
        )

    def _access(self) -> None:
        """A model user's API key for the route, and the gateway's own issuer token."""
        admin = self._admin_env()
        if not self._state.get("api_key_made"):
            self._report("Model manager: an API key for a model user, a token for the gateway")
            made = self._cli_json(
                ["platform", "keys", "create", "--name", "demo-user", "--routes", ROUTE_ID],
                env=admin,
            )
            write_file(
                self.layout.api_key, (made["key"] + "\n").encode(), mode=0o600, overwrite=True
            )
            self._save(api_key_made=True)
        if not self._state.get("gateway_token"):
            # issuer: the gateway takes its SM2 private key from the platform
            # (--controlplane-key), which an auditor token may not read.
            self.layout.gateway_token.unlink(missing_ok=True)
            self._cli(
                [
                    "admin",
                    "tokens",
                    "create",
                    "--name",
                    "gateway",
                    "--role",
                    "issuer",
                    "--out",
                    str(self.layout.gateway_token),
                ],
                env=admin,
            )
            self._save(gateway_token=True)

    def _admin_login(self) -> AdminLogin:
        """Enrol TOTP for the owner (once) as a person does at first login; return the login."""
        password = self.layout.owner_password.read_text().strip()
        if not self._state.get("totp_enrolled"):
            import pyotp

            self._report("Vendor: the owner's first login, enrolling TOTP")
            client = _SessionClient(self.controlplane_url, self.options.startup_timeout_s)
            self._echo(f"POST /v1/session {{vendor: {VENDOR}, username: {OWNER}, password}}")
            body = {"vendor": VENDOR, "username": OWNER, "password": password}
            try:
                login = client.post("/v1/session", body)
            except _RefusedError as exc:
                if "totp_required" not in exc.body:
                    raise
                self._recover_enrolment(client, body)
                return self._admin_login()
            client.csrf = str(login["csrf_token"])
            self._echo("POST /v1/session/totp")
            enrolment = client.post("/v1/session/totp", {})
            secret = str(enrolment["secret"])
            # Stored before the confirmation: confirmed but unsaved would lock the owner out.
            write_file(self.layout.owner_totp, (secret + "\n").encode(), mode=0o600, overwrite=True)
            self._echo("POST /v1/session/totp/confirm {code}")
            codes = client.post("/v1/session/totp/confirm", {"code": pyotp.TOTP(secret).now()})
            write_file(
                self.layout.owner_recovery_codes,
                ("\n".join(codes["recovery_codes"]) + "\n").encode(),
                mode=0o600,
                overwrite=True,
            )
            self._save(totp_enrolled=True, otpauth_uri=str(enrolment["otpauth_uri"]))
        return AdminLogin(
            vendor=VENDOR,
            username=OWNER,
            password=password,
            totp_secret=self.layout.owner_totp.read_text().strip(),
            otpauth_uri=str(self._state["otpauth_uri"]),
            recovery_codes=self.layout.owner_recovery_codes,
        )

    def _recover_enrolment(self, client: _SessionClient, body: dict[str, str]) -> None:
        """A run stopped after confirming TOTP and before recording it: check the kept secret.

        The owner's TOTP is on, so the secret must be the one in ``owner.totp``
        (written before the confirmation); a login with it proves that, and the
        enrolment is recorded. Without it the owner needs an MFA reset.
        """
        import pyotp

        reset = (
            f"{self._admin_env_line()} modelseal admin users reset-mfa {OWNER}, "
            "then run modelseal up again"
        )
        if not self.layout.owner_totp.exists():
            raise SystemStateError(f"the owner has TOTP on but its secret was not kept; {reset}")
        secret = self.layout.owner_totp.read_text().strip()
        # the code of the next step: the confirmation may have used the current one
        code = pyotp.TOTP(secret).at(time.time() + 30)
        self._echo(
            "POST /v1/session {vendor, username, password, totp}  (checking the kept secret)"
        )
        try:
            client.post("/v1/session", {**body, "totp": code})
        except _RefusedError:
            raise SystemStateError(
                f"the kept TOTP secret does not log the owner in; {reset}"
            ) from None
        uri = pyotp.TOTP(secret).provisioning_uri(name=OWNER, issuer_name=f"modelseal {VENDOR}")
        self._save(totp_enrolled=True, otpauth_uri=uri)

    def _admin_env_line(self) -> str:
        return (
            f"MODELSEAL_SERVER={self.controlplane_url} "
            f"MODELSEAL_TOKEN_FILE={shlex.quote(str(self.layout.owner_token))}"
        )

    # -- processes -------------------------------------------------------------------------------

    def _spawn(
        self,
        name: str,
        args: Sequence[str],
        ready_url: str,
        *,
        env: Mapping[str, str] | None = None,
        grace_s: float = STOP_GRACE_S,
    ) -> _Process:
        log = self.layout.logs / f"{name}.log"
        shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        self._echo(f"$ {shown + ' ' if shown else ''}modelseal {shlex.join(args)}  (log: {log})")
        handle: IO[bytes]
        with log.open("ab") as handle:
            proc = subprocess.Popen(
                [self.options.python, "-m", "modelseal", *args],
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=self._env(**(env or {})),
                # Ctrl-C at the terminal reaches only us; we stop them in order.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        process = _Process(name, proc, log, ready_url, grace_s)
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
            "controlplane": (self.options.host, self.options.controlplane_port),
            "node": ("127.0.0.1", self.options.node_port),
            "gateway": (self.options.host, self.options.gateway_port),
        }
        if len({port for _, port in wanted.values()}) != len(wanted):
            raise SystemStateError(
                "the control plane, gateway and node ports must differ: "
                + ", ".join(f"--{flag}-port {port}" for flag, (_, port) in wanted.items())
            )
        for flag, (host, port) in wanted.items():
            if not _port_free(host, port):
                raise ListenError(
                    f"{host}:{port} is already in use; choose another with --{flag}-port"
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
        """Set up what is missing, start the servers, deploy, check a prediction end to end."""
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
                    # the local backend supervises replicas from threads of the server
                    # process: one process, or each worker would have its own
                    "--workers",
                    "1",
                ],
                self.controlplane_url + "/readyz",
                env={
                    "MODELSEAL_DEPLOY_BACKEND": "local",
                    "MODELSEAL_NODE_PORT_RANGE": node_port_range(self.options.node_port),
                    # the replicas inherit it: their guard keeps its state with the
                    # device's (a spec may not set MODELSEAL_ variables itself)
                    "MODELSEAL_STATE_DIR": str(self.layout.device_state),
                },
                grace_s=CONTROLPLANE_STOP_GRACE_S,
            )
            self._seal_demo_model()
            self._catalog()
            self._activate_device()
            self._register_on_platform()
            deployment_id = self._deploy()
            self._access()
            self._report(f"Starting the gateway on {self.gateway_url}, following the control plane")
            self._spawn(
                "gateway",
                [
                    "gateway",
                    "--controlplane",
                    self.controlplane_url,
                    "--token-file",
                    str(self.layout.gateway_token),
                    "--controlplane-key",
                    "--host",
                    self.options.host,
                    "--port",
                    str(self.options.gateway_port),
                ],
                self.gateway_url + "/healthz",
            )
            admin = self._admin_login()
            summary = Summary(
                controlplane_url=self.controlplane_url,
                gateway_url=self.gateway_url,
                serve_url=self.serve_url,
                owner_token=self.layout.owner_token,
                api_key=self.layout.api_key.read_text().strip(),
                license_id=str(self._state["license_id"]),
                license_key=str(self._state["license_key"]),
                deployment_id=deployment_id,
                logs=self.layout.logs,
                admin=admin,
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
    "AdminLogin",
    "Layout",
    "Summary",
    "SystemOptions",
    "SystemRunError",
    "SystemStack",
    "SystemStateError",
    "node_port_range",
]
