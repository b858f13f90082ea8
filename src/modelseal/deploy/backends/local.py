"""The ``local`` backend: a deployment as supervised ``modelseal serve`` processes on this machine.

No cluster, no container runtime: the spec's ``command`` is run directly,
translated the way a kubelet would have presented it inside the pod
(:func:`local_command`):

* the command must be ``modelseal serve ...`` (there is no image to run
  anything else from); ``modelseal`` becomes this interpreter's
  ``python -m modelseal``;
* ``$(VAR)`` references are expanded from the environment as Kubernetes
  does, so ``--license $(MODELSEAL_LICENSE)`` works unchanged;
* every argument that is a path under a volume's ``mountPath`` is mapped to
  the volume's ``hostPath`` (a ``persistentVolumeClaim`` has no meaning
  here and is refused);
* the license, envelope key and trust from the bundle are written, mode
  0600, to the deployment's state directory and passed as ``--license``,
  ``--envelope-key`` and ``--trust`` unless the command already passes
  them; ``--host``/``--port`` in the command are the container's and are
  replaced by the replica's private loopback port;
* the environment is this process's (so ``PATH``, ``PYTHONPATH`` and the
  guard's ``MODELSEAL_STATE_DIR`` carry over: the replicas are programs on
  this device, sharing its guard state) plus the spec's ``env`` plus
  ``MODELSEAL_LICENSE``/``MODELSEAL_ENVELOPE_KEY``/``MODELSEAL_TRUST``.

NodePorts: a ``modelseal serve`` has one HTTP port, so the local backend
takes specs with no ``extraPorts``, i.e. exactly one NodePort. The
supervisor listens on it and balances over the ready replicas
(``_supervisor.py``), so ``forward_url`` is ``http://HOST:NODEPORT``
whatever the number of replicas or restarts.

Where the supervisor lives (``supervise=``):

* ``"thread"`` (the default, for a long-running host such as the control
  plane): threads in this process. Deployments stop with :meth:`close`,
  which the host calls on shutdown; they are not left running unowned.
* ``"process"`` (``modelseal deploy apply``): one detached supervisor
  process per deployment, so the CLI returns while the deployment keeps
  running. A later ``status``/``logs``/``delete`` finds it through the
  state directory (``supervisor.json``: pid and kernel start time, so a
  recycled pid is never signalled).

Either way the state of a deployment is the folder
``DATA_DIR/local/NAMESPACE/NAME`` (0700): ``plan.json``, ``status.json``,
the license and keys, ``logs/replica-N.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from modelseal.deploy.backends._supervisor import (
    PLAN_FILE,
    STATUS_FILE,
    SUPERVISOR_FILE,
    Plan,
    SupervisionPolicy,
    Supervisor,
    process_start_time,
    read_logs,
    same_process,
    write_json_atomic,
)
from modelseal.deploy.backends.base import (
    BackendError,
    BackendUnavailableError,
    DeploymentNotFoundError,
    DeploymentPhase,
    DeploymentStatus,
)
from modelseal.deploy.bundle import DeploymentBundle
from modelseal.deploy.errors import DeploySpecError, NodePortUnavailableError

LICENSE_FILE: Final = "license.jwt"
ENVELOPE_KEY_FILE: Final = "envelope-key.pub"
_VAR_REF: Final = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
_START_TIMEOUT_S: Final = 15.0
#: How long a stop waits for SIGKILLed orphan replicas to be gone (it takes ms).
_ORPHAN_EXIT_S: Final = 5.0

#: Supervisors running in threads of this process, by state directory: every
#: LocalBackend instance of the process sees them, the one that started them
#: stops them on close().
_RUNNING: dict[Path, Supervisor] = {}
_RUNNING_LOCK = threading.Lock()


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/modelseal/deploy``, else ``~/.local/share/modelseal/deploy``."""
    base = os.environ.get("XDG_DATA_HOME")
    root = Path(base) if base else Path.home() / ".local" / "share"
    return root / "modelseal" / "deploy"


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names replaced, ``$$`` is ``$``, others kept."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(replace, text)


def _strip_options(argv: list[str], names: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        if any(arg.startswith(name + "=") for name in names):
            continue
        out.append(arg)
    return out


def _has_option(argv: Sequence[str], name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in argv)


def local_command(
    bundle: DeploymentBundle, files: Mapping[str, str], *, python: str = sys.executable
) -> tuple[list[str], dict[str, str]]:
    """The replica's argv (without ``--host``/``--port``) and the env the spec adds.

    ``files`` maps ``license``, ``envelope_key``, ``trust`` to where the
    backend wrote them. Pure: raises :class:`DeploySpecError` naming the
    field when the spec cannot run locally.
    """
    spec = bundle.deployment.spec
    problems: list[tuple[str, str]] = []
    if spec.extra_ports:
        problems.append(
            (
                "spec.extraPorts",
                "the local backend runs modelseal serve, which has one HTTP port; "
                "remove extraPorts or use the kubernetes backend",
            )
        )
    for index, volume in enumerate(spec.volumes):
        if volume.host_path is None:
            problems.append(
                (
                    f"spec.volumes[{index}]",
                    "a persistentVolumeClaim has no meaning on the local backend; use hostPath",
                )
            )
    command = [*(spec.command or []), *(spec.args or [])]
    if not spec.command:
        problems.append(
            (
                "spec.command",
                "the local backend runs no image, so it needs the command "
                '(e.g. ["modelseal", "serve", "/models/demo.mseal"])',
            )
        )
    elif Path(command[0]).name != "modelseal" or command[1:2] != ["serve"]:
        problems.append(
            (
                "spec.command",
                f"the local backend runs only 'modelseal serve ...', not {command[0]!r}",
            )
        )
    if problems:
        raise DeploySpecError(problems)

    env: dict[str, str] = {"MODELSEAL_LICENSE": files["license"]}
    if "envelope_key" in files:
        env["MODELSEAL_ENVELOPE_KEY"] = files["envelope_key"]
    if "trust" in files:
        env["MODELSEAL_TRUST"] = files["trust"]
    env.update(spec.env)

    # Longest mount first: /models/big wins over /models for /models/big/x.
    mounts = sorted(
        ((v.mount_path.rstrip("/"), v.host_path or "") for v in spec.volumes),
        key=lambda item: len(item[0]),
        reverse=True,
    )

    def map_path(value: str) -> str:
        for mount, host in mounts:
            if value == mount or value.startswith(mount + "/"):
                return host.rstrip("/") + value[len(mount) :] if host != "/" else value
        return value

    def translate(arg: str) -> str:
        arg = expand_vars(arg, env)
        if arg.startswith("--") and "=" in arg:
            option, _, value = arg.partition("=")
            return f"{option}={map_path(value)}"
        return map_path(arg)

    argv = [translate(a) for a in command[2:]]
    argv = _strip_options(argv, ("--host", "--port"))
    if not _has_option(argv, "--license"):
        argv += ["--license", files["license"]]
    if "envelope_key" in files and not _has_option(argv, "--envelope-key"):
        argv += ["--envelope-key", files["envelope_key"]]
    if "trust" in files and not _has_option(argv, "--trust"):
        argv += ["--trust", files["trust"]]
    return [python, "-m", "modelseal", "serve", *argv], env


def _node_port(bundle: DeploymentBundle, node_ports: Sequence[int]) -> int:
    count = bundle.deployment.spec.node_port_count
    if len(node_ports) != count:
        raise NodePortUnavailableError(
            f"the deployment exposes {count} port(s) but {len(node_ports)} NodePort(s) were given"
        )
    return int(node_ports[0])


def listening_ports() -> frozenset[int]:
    """TCP ports something on this machine listens on (from /proc/net/tcp{,6})."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except (OSError, ValueError):
            continue
    return frozenset(ports)


class LocalBackend:
    """Runs deployments as supervised ``modelseal serve`` processes (see the module doc)."""

    name = "local"

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        supervise: Literal["thread", "process"] = "thread",
        host: str = "127.0.0.1",
        policy: SupervisionPolicy | None = None,
        python: str = sys.executable,
    ) -> None:
        if supervise not in ("thread", "process"):
            raise BackendError(f"supervise must be 'thread' or 'process', not {supervise!r}")
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.root = self.data_dir / "local"
        self.supervise = supervise
        self.host = host
        self.policy = policy or SupervisionPolicy()
        self.python = python
        self._owned: set[tuple[str, str]] = set()
        self._children: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailableError(
                f"the local backend cannot use {self.root}: {exc.strerror or exc}"
            ) from None

    # --- paths and locks -----------------------------------------------------------

    def _dir(self, namespace: str, name: str) -> Path:
        return self.root / namespace / name

    @contextlib.contextmanager
    def _locked(self, namespace: str, name: str) -> Iterator[None]:
        """One apply/delete of a name at a time, across processes (two CLI calls)."""
        folder = self.root / namespace
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(folder / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- the protocol ----------------------------------------------------------------

    def apply(
        self, bundle: DeploymentBundle, node_ports: Sequence[int], *, dry_run: bool = False
    ) -> DeploymentStatus:
        namespace = bundle.deployment.metadata.namespace
        name = bundle.name
        node_port = _node_port(bundle, node_ports)
        state = self._dir(namespace, name)
        files = {"license": str(state / LICENSE_FILE)}
        if bundle.envelope_key is not None:
            files["envelope_key"] = str(state / ENVELOPE_KEY_FILE)
        if bundle.trust is not None:
            files["trust"] = str(state / bundle.trust[0])
        argv, spec_env = local_command(bundle, files, python=self.python)
        self._check_host_paths(bundle)
        if dry_run:
            self._check_port_free(node_port, (namespace, name))
            return DeploymentStatus(
                namespace,
                name,
                self.name,
                "Pending",
                bundle.deployment.spec.replicas,
                0,
                (node_port,),
                _forward_url(self.host, node_port),
                message="dry run: would run " + " ".join(argv[2:]),
            )
        plan = Plan(
            namespace=namespace,
            name=name,
            replicas=bundle.deployment.spec.replicas,
            argv=argv,
            env={**os.environ, "PYTHONPATH": _pythonpath(), **spec_env},
            host=self.host,
            node_ports=[node_port],
            policy=self.policy,
        )
        with self._locked(namespace, name):
            # In place: the old replicas stop first (their NodePort is the new one's).
            self._stop(namespace, name)
            state.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._check_port_free(node_port, (namespace, name))
            _write_private(state / LICENSE_FILE, bundle.license)
            if bundle.envelope_key is not None:
                _write_private(state / ENVELOPE_KEY_FILE, bundle.envelope_key)
            if bundle.trust is not None:
                _write_private(state / bundle.trust[0], bundle.trust[1])
            (state / STATUS_FILE).unlink(missing_ok=True)
            write_json_atomic(state / PLAN_FILE, plan.to_json())
            if self.supervise == "thread":
                supervisor = Supervisor(plan, state, mode="thread")
                try:
                    supervisor.start()
                except OSError as exc:
                    raise BackendError(
                        f"cannot listen on {self.host}:{node_port}: {exc.strerror or exc}"
                    ) from None
                with _RUNNING_LOCK:
                    _RUNNING[state] = supervisor
                self._owned.add((namespace, name))
                write_json_atomic(
                    state / SUPERVISOR_FILE,
                    {
                        "pid": os.getpid(),
                        "start_time": process_start_time(os.getpid()),
                        "mode": "thread",
                    },
                )
            else:
                self._spawn(state, (namespace, name))
        return self.status(namespace, name)

    def _spawn(self, state: Path, key: tuple[str, str]) -> None:
        log = os.open(state / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            child = subprocess.Popen(
                [self.python, "-m", "modelseal.deploy.backends._supervisor", str(state)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                cwd=state,
                env={**os.environ, "PYTHONPATH": _pythonpath()},
            )
        finally:
            os.close(log)
        self._children[key] = child
        write_json_atomic(
            state / SUPERVISOR_FILE,
            {"pid": child.pid, "start_time": process_start_time(child.pid), "mode": "process"},
        )
        # Wait until it has bound the NodePort (or failed to): the caller's next
        # status must not read a status file from before this apply.
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if (state / STATUS_FILE).exists():
                return
            if child.poll() is not None:
                break
            time.sleep(0.05)
        if not (state / STATUS_FILE).exists():
            tail = _tail(state / "supervisor.log")
            raise BackendError(
                f"the supervisor of {key[0]}/{key[1]} did not start" + (f": {tail}" if tail else "")
            )

    def status(self, namespace: str, name: str) -> DeploymentStatus:
        state = self._dir(namespace, name)
        with _RUNNING_LOCK:
            supervisor = _RUNNING.get(state)
        plan_data = _read_json(state / PLAN_FILE)
        if plan_data is None:
            raise DeploymentNotFoundError(namespace, name, self.name)
        plan = Plan.from_json(plan_data)
        if supervisor is not None:
            return self._to_status(plan, supervisor.snapshot(), alive=True)
        snapshot = _read_json(state / STATUS_FILE) or {}
        return self._to_status(plan, snapshot, alive=self._supervisor_alive(state))

    def _to_status(self, plan: Plan, snap: dict[str, Any], *, alive: bool) -> DeploymentStatus:
        phase = str(snap.get("phase", "Pending"))
        message = str(snap.get("message", ""))
        replicas = snap.get("replicas") or []
        ready = int(snap.get("ready_replicas", 0))
        if not alive and phase != "Failed":
            phase, ready = "Stopped", 0
            message = "its supervisor is not running (host stopped or killed); apply it again"
        details: dict[str, str] = {"state_dir": str(self._dir(plan.namespace, plan.name))}
        pids = [str(r.get("pid")) for r in replicas if r.get("pid")]
        if pids and alive:
            details["pids"] = ",".join(pids)
        if snap.get("supervisor_pid"):
            details["supervisor_pid"] = str(snap["supervisor_pid"])
        return DeploymentStatus(
            namespace=plan.namespace,
            name=plan.name,
            backend=self.name,
            phase=_phase(phase),
            replicas=plan.replicas,
            ready_replicas=ready,
            node_ports=tuple(plan.node_ports),
            forward_url=_forward_url(plan.host, plan.node_ports[0]),
            restarts=int(snap.get("restarts", 0)),
            message=message,
            details=details,
        )

    def logs(self, namespace: str, name: str, *, tail: int = 200) -> str:
        state = self._dir(namespace, name)
        if not (state / PLAN_FILE).exists():
            raise DeploymentNotFoundError(namespace, name, self.name)
        return read_logs(state / "logs", tail)

    def delete(self, namespace: str, name: str) -> bool:
        state = self._dir(namespace, name)
        with self._locked(namespace, name):
            if not state.exists():
                return False
            self._stop(namespace, name)
            shutil.rmtree(state, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.root / namespace / f".{name}.lock").unlink()
            (self.root / namespace).rmdir()
        return True

    def list(self) -> list[DeploymentStatus]:
        found: list[DeploymentStatus] = []
        for plan_file in sorted(self.root.glob(f"*/*/{PLAN_FILE}")):
            namespace, name = plan_file.parent.parent.name, plan_file.parent.name
            with contextlib.suppress(DeploymentNotFoundError, KeyError, ValueError, TypeError):
                found.append(self.status(namespace, name))
        return found

    def used_node_ports(self) -> frozenset[int]:
        """Ports something on this machine already listens on, minus our own NodePorts.

        Our own are in the caller's reservation records already; anything
        else listening (another server, a test) would make the NodePort
        fail to bind, so the allocator is told to avoid it.
        """
        ours: set[int] = set()
        for plan_file in self.root.glob(f"*/*/{PLAN_FILE}"):
            data = _read_json(plan_file)
            if data:
                ours.update(int(p) for p in data.get("node_ports", []))
        return listening_ports() - ours

    def close(self) -> None:
        """Stop the deployments this instance supervises in threads (they live with it)."""
        for namespace, name in sorted(self._owned):
            with self._locked(namespace, name):
                self._stop(namespace, name)
        for child in self._children.values():
            with contextlib.suppress(Exception):
                child.poll()
        self._children.clear()

    # --- internals ---------------------------------------------------------------------

    def _check_host_paths(self, bundle: DeploymentBundle) -> None:
        problems = [
            (
                f"spec.volumes[{i}].hostPath",
                f"no such directory or file on this machine: {v.host_path}",
            )
            for i, v in enumerate(bundle.deployment.spec.volumes)
            if v.host_path is not None and not os.path.exists(v.host_path)
        ]
        if problems:
            raise DeploySpecError(problems)

    def _check_port_free(self, port: int, key: tuple[str, str]) -> None:
        """Refuse a NodePort someone else listens on, before anything is started."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, port))
            except OSError as exc:
                state = self._dir(*key)
                if (state / PLAN_FILE).exists() and self._supervisor_alive(state):
                    return  # our own running copy holds it; apply replaces it
                raise NodePortUnavailableError(
                    f"NodePort {port} is not free on {self.host}: {exc.strerror or exc}"
                ) from None

    def _supervisor_alive(self, state: Path) -> bool:
        info = _read_json(state / SUPERVISOR_FILE)
        if not info:
            return False
        pid = int(info.get("pid", 0))
        if info.get("mode") == "thread":
            # Supervised by threads of some host: alive while that host is.
            if pid == os.getpid():
                with _RUNNING_LOCK:
                    return state in _RUNNING
            return same_process(pid, info.get("start_time"))
        return same_process(pid, info.get("start_time"))

    def _stop(self, namespace: str, name: str) -> None:
        """Stop whatever runs ``namespace/name`` now: our threads, a supervisor, orphans."""
        key = (namespace, name)
        state = self._dir(namespace, name)
        self._owned.discard(key)
        with _RUNNING_LOCK:
            supervisor = _RUNNING.pop(state, None)
        if supervisor is not None:
            supervisor.stop()
            return
        info = _read_json(state / SUPERVISOR_FILE) or {}
        pid = int(info.get("pid", 0))
        if (
            info.get("mode") == "thread"
            and pid != os.getpid()
            and same_process(pid, info.get("start_time"))
        ):
            # Threads of another live host run it: killing its replicas from
            # here would only make that host restart them.
            raise BackendError(
                f"{namespace}/{name} is supervised by process {pid} (another host using "
                f"{self.data_dir}); stop or delete it there"
            )
        if info.get("mode") == "process" and same_process(pid, info.get("start_time")):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.policy.grace_s + 5
            while time.monotonic() < deadline and same_process(pid, info.get("start_time")):
                self._reap(key)
                time.sleep(0.05)
            if same_process(pid, info.get("start_time")):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        self._reap(key)
        # Replicas whose supervisor died without stopping them (kill -9 of the
        # host or the supervisor): their pids and start times are in the status.
        snapshot = _read_json(state / STATUS_FILE) or {}
        killed: list[tuple[int, Any]] = []
        for replica in snapshot.get("replicas", []):
            rpid = int(replica.get("pid") or 0)
            if same_process(rpid, replica.get("start_time")):
                with contextlib.suppress(OSError):
                    os.killpg(rpid, signal.SIGKILL)
                killed.append((rpid, replica.get("start_time")))
        # SIGKILL is delivered, not awaited: gone before apply starts the new copy,
        # so old and new replicas never overlap on the device's guard state.
        deadline = time.monotonic() + _ORPHAN_EXIT_S
        while any(same_process(*k) for k in killed) and time.monotonic() < deadline:
            time.sleep(0.02)
        (state / SUPERVISOR_FILE).unlink(missing_ok=True)

    def _reap(self, key: tuple[str, str]) -> None:
        child = self._children.get(key)
        if child is not None and child.poll() is not None:
            del self._children[key]


def _forward_url(host: str, port: int) -> str:
    """Where a gateway on this machine reaches the NodePort (a wildcard bind is loopback too)."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - the URL, not a bind
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _phase(text: str) -> DeploymentPhase:
    if text == "Pending":
        return "Pending"
    if text == "Running":
        return "Running"
    if text == "Degraded":
        return "Degraded"
    if text == "Failed":
        return "Failed"
    return "Stopped"


def _write_private(path: Path, text: str) -> None:
    """0600 from the first byte, replaced by rename: never readable by others, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _pythonpath() -> str:
    """The supervisor must import this very copy of modelseal, wherever it came from."""
    here = str(Path(__file__).resolve().parents[3])
    rest = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(p for p in (here, rest) if p)


__all__ = [
    "LocalBackend",
    "SupervisionPolicy",
    "default_data_dir",
    "expand_vars",
    "listening_ports",
    "local_command",
]
