"""The local backend's supervisor: one deployment's replicas, their logs and their NodePort.

One :class:`Supervisor` runs one deployment. It lives either in threads of
a long-running host (the control plane: deployments stop with it) or alone
in a detached process per deployment (``python -m
modelseal.deploy.backends._supervisor STATE_DIR``, what ``modelseal deploy
apply`` starts, so the CLI can return while the deployment keeps running).
Both are the same code; the difference is only who owns the threads.

What it does, and why each part is there:

* **Replicas**: one ``modelseal serve`` process per replica, each on a
  private loopback port chosen at start (never a NodePort), in its own
  session so the stop signal reaches ``--workers`` children too.
* **The NodePort**: a small TCP load balancer listens on the deployment's
  first NodePort and spreads connections round-robin over the replicas
  that pass their readiness check, as a Kubernetes Service does. With no
  ready replica it answers ``503`` (JSON) and closes. This keeps the
  forward URL a gateway route points at the same across restarts, and
  makes ``replicas: 3`` mean three processes behind one address.
* **Restarts**: a replica that exits is started again after an
  exponential back-off (0.5 s, 1 s, 2 s, ... up to 30 s). A replica that
  crashes ``max_quick_crashes`` times in a row, each within ``stable_s`` of
  its start, is given up (``Failed``), like Kubernetes' CrashLoopBackOff
  but with an end. Exit codes that say "this configuration will never
  start" (a refused license 10-18, a bad argument 2, a bad file 3-7) are
  ``Failed`` at once: restarting cannot fix them, and the one-line error
  the process printed becomes the deployment's message.
* **Health**: ``GET /v2/health/ready`` every ``health_interval_s``; a replica
  is routed to only while it answers 200. A replica that was ready and then
  fails ``/v2/health/live`` three times in a row is killed and restarted
  (the liveness probe); one that is not ready within ``startup_s`` too.
* **Logs**: standard output and error of every replica go, line by line
  with a UTC timestamp and the replica number, to
  ``logs/replica-N.log``, rotated at ``log_max_bytes`` with
  ``log_backups`` old files kept.
* **Stop**: SIGTERM to each replica's process group, SIGKILL after
  ``grace_s``: ``modelseal serve`` finishes requests in flight on SIGTERM.

The supervisor writes ``status.json`` (atomically, on every change) so a
later CLI call, or another process, can read the state without talking to
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

#: ``modelseal serve`` exit codes that no restart can fix (docs/cli.md):
#: usage (2), bad input file (3), integrity (4), key (5), loader (6),
#: missing dependency (7), license refused (10-18). 19 (guard storage) and
#: 26 (port in use) are worth a retry.
PERMANENT_EXIT_CODES: Final = frozenset({2, 3, 4, 5, 6, 7, *range(10, 19)})

PLAN_FILE: Final = "plan.json"
STATUS_FILE: Final = "status.json"
SUPERVISOR_FILE: Final = "supervisor.json"
LOG_DIR: Final = "logs"

_UNAVAILABLE: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b'Content-Length: 32\r\nConnection: close\r\n\r\n{"error": "no replica is ready"}'
)


@dataclass(frozen=True)
class SupervisionPolicy:
    """Timings of supervision; the defaults suit people, tests shorten them."""

    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_quick_crashes: int = 5
    #: A replica that ran this long before exiting resets the crash count.
    stable_s: float = 30.0
    health_interval_s: float = 1.0
    #: Time a replica has to become ready (decrypting a large model takes a while).
    startup_s: float = 300.0
    liveness_failures: int = 3
    grace_s: float = 30.0
    log_max_bytes: int = 1 << 20
    log_backups: int = 3

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SupervisionPolicy:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Plan:
    """Everything the supervisor needs, written to ``plan.json`` by the backend."""

    namespace: str
    name: str
    replicas: int
    #: The replica's command without ``--host``/``--port`` (the supervisor adds them).
    argv: list[str]
    env: dict[str, str]
    host: str
    node_ports: list[int]
    policy: SupervisionPolicy = field(default_factory=SupervisionPolicy)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            namespace=data["namespace"],
            name=data["name"],
            replicas=int(data["replicas"]),
            argv=list(data["argv"]),
            env=dict(data["env"]),
            host=data["host"],
            node_ports=[int(p) for p in data["node_ports"]],
            policy=SupervisionPolicy.from_json(data.get("policy", {})),
        )


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or ``None`` if it is gone.

    A zombie (exited, not yet reaped by its parent) counts as gone, but only
    once every thread has exited: a killed multi-threaded process shows its
    leader as a zombie while its other threads are still on their way out,
    and those still hold its files. A supervisor killed with SIGKILL was
    "gone" while its NodePort still listened for up to 22 ms (measured
    here, 19 of 40 kills), and the next apply found the port taken.

    Stored with every pid we record, so a pid the kernel has since given to
    another program is never signalled.
    """
    fields = _stat_fields(f"/proc/{pid}/stat")
    if fields is None:
        return None
    if fields[:1] in ([b"Z"], [b"X"]) and not _threads_still_exiting(pid):
        return None  # exited, only waiting to be reaped: not running
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _stat_fields(path: str) -> list[bytes] | None:
    """The fields of a ``/proc/.../stat`` after the command name (field 3 first)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return data[data.rfind(b")") + 2 :].split()


def _threads_still_exiting(pid: int) -> bool:
    """True while a thread of ``pid`` other than an exited leader has not exited yet."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        fields = _stat_fields(f"/proc/{pid}/task/{task}/stat")
        if fields is not None and fields[:1] not in ([b"Z"], [b"X"]):
            return True
    return False


def same_process(pid: int, start_time: int | None) -> bool:
    """True when ``pid`` is alive and still the process recorded with ``start_time``."""
    if pid <= 0:
        return False
    current = process_start_time(pid)
    if current is None:
        if not Path("/proc").is_dir():  # pragma: no cover - no procfs: trust the pid
            try:
                os.kill(pid, 0)
            except OSError:
                return False
            return True
        return False
    return start_time is None or current == start_time


def write_json_atomic(path: Path, data: object, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` as JSON in one rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def free_loopback_port() -> int:
    """A port the kernel considers free now (a replica that loses the race exits 26 and retries)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RotatingLog:
    """Append-only log file rotated by size (``replica-0.log``, ``.1``, ``.2`` ...)."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._handle: IO[bytes] = self._open()

    def _open(self) -> IO[bytes]:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "ab")

    def write_line(self, line: bytes) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode("ascii")
        record = stamp + b" " + line.rstrip(b"\r\n") + b"\n"
        with self._lock:
            if self._handle.tell() + len(record) > self.max_bytes and self._handle.tell() > 0:
                self._rotate()
            self._handle.write(record)
            self._handle.flush()

    def _rotate(self) -> None:
        self._handle.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._handle = self._open()

    def close(self) -> None:
        with self._lock:
            self._handle.close()


def read_logs(log_dir: Path, tail: int) -> str:
    """The last ``tail`` lines of every replica's log, merged in time order."""
    if tail <= 0 or not log_dir.is_dir():
        return ""
    lines: list[tuple[str, int, str]] = []
    for path in sorted(log_dir.glob("replica-*.log*")):
        stem = path.name.split(".log")[0]
        replica = stem.removeprefix("replica-")
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for order, line in enumerate(text.splitlines()[-tail:]):
            stamp, _, rest = line.partition(" ")
            lines.append((stamp, order, f"{stamp} [replica {replica}] {rest}"))
    lines.sort()
    return "".join(entry + "\n" for _, _, entry in lines[-tail:])


@dataclass
class _ReplicaState:
    index: int
    port: int = 0
    pid: int = 0
    start_time: int | None = None
    ready: bool = False
    restarts: int = 0
    failed: bool = False
    last_error: str = ""
    last_exit: int | None = None
    #: Why the last readiness probe failed ("" once it answered 200): what
    #: ``status`` says about a replica that runs but is not ready.
    probe: str = ""
    #: Wall-clock time of the current process's start (0: none running).
    started: float = 0.0
    proc: subprocess.Popen[bytes] | None = None


class Supervisor:
    """Runs one deployment's replicas and its NodePort until :meth:`stop`."""

    def __init__(
        self,
        plan: Plan,
        state_dir: Path,
        *,
        mode: str = "thread",
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.plan = plan
        self.state_dir = state_dir
        self.mode = mode
        self._on_change = on_change
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        #: Held from a snapshot to its rename (see _publish); taken before _lock.
        self._publish_lock = threading.Lock()
        self._replicas = [_ReplicaState(i) for i in range(plan.replicas)]
        self._threads: list[threading.Thread] = []
        self._logs: list[RotatingLog] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._rr = 0
        self._stopped = False
        self._ever_ready = False

    # --- life cycle ------------------------------------------------------------

    def start(self) -> None:
        """Bind the NodePort, then start every replica; a taken NodePort is an OSError."""
        log_dir = self.state_dir / LOG_DIR
        log_dir.mkdir(mode=0o700, exist_ok=True)
        self._bind_node_port()
        for replica in self._replicas:
            log = RotatingLog(
                log_dir / f"replica-{replica.index}.log",
                self.plan.policy.log_max_bytes,
                self.plan.policy.log_backups,
            )
            self._logs.append(log)
            thread = threading.Thread(
                target=self._run_replica,
                args=(replica, log),
                name=f"modelseal-local-{self.plan.name}-{replica.index}",
                daemon=True,
            )
            self._threads.append(thread)
        self._publish()
        for thread in self._threads:
            thread.start()

    def _bind_node_port(self) -> None:
        loop = asyncio.new_event_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in self.plan.host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.plan.host, self.plan.node_ports[0]))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            loop.close()
            raise
        self._server = loop.run_until_complete(asyncio.start_server(self._proxy, sock=sock))
        self._loop = loop
        thread = threading.Thread(
            target=loop.run_forever, name=f"modelseal-local-{self.plan.name}-lb", daemon=True
        )
        thread.start()
        self._lb_thread = thread

    def stop(self) -> None:
        """Stop the NodePort and every replica (SIGTERM, SIGKILL after the grace period)."""
        self._stopping.set()
        if self._loop is not None and self._server is not None:
            loop, server = self._loop, self._server

            async def _close() -> None:
                server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2)

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_close(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            self._lb_thread.join(5)
            with contextlib.suppress(Exception):
                loop.close()
            self._loop = None
        with self._lock:
            procs = [r.proc for r in self._replicas if r.proc is not None]
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.plan.policy.grace_s
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        for thread in self._threads:
            thread.join(5)
        for log in self._logs:
            log.close()
        with self._lock:
            self._stopped = True
            for replica in self._replicas:
                replica.ready = False
                replica.pid = 0
        self._publish()

    @property
    def stopped(self) -> bool:
        return self._stopped

    # --- replicas --------------------------------------------------------------

    def _run_replica(self, replica: _ReplicaState, log: RotatingLog) -> None:
        """The replica's thread: a bug in supervision must show, not leave a silent replica.

        Before this guard an exception here ended the thread with a
        traceback on the supervisor's stderr only: the replica stayed
        "not ready" with a pid forever and nothing said why.
        """
        try:
            self._supervise_replica(replica, log)
        except Exception as exc:
            text = "".join(traceback.format_exception(exc))
            for line in text.splitlines():
                log.write_line(f"modelseal-local: supervisor error: {line}".encode())
            with self._lock:
                replica.failed = True
                replica.ready = False
                replica.last_error = f"supervisor error: {type(exc).__name__}: {exc}"[:500]
                proc = replica.proc
            if proc is not None and proc.poll() is None:
                # Unsupervised it would run on unseen: stop it, as a crash loop's end does.
                _signal_group(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
            with self._lock:
                replica.pid = 0
            self._publish()

    def _supervise_replica(self, replica: _ReplicaState, log: RotatingLog) -> None:
        policy = self.plan.policy
        quick = 0
        while not self._stopping.is_set():
            port = free_loopback_port()
            argv = [*self.plan.argv, "--host", "127.0.0.1", "--port", str(port)]
            try:
                proc = subprocess.Popen(
                    argv,
                    env=self.plan.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=self.state_dir,
                )
            except OSError as exc:
                with self._lock:
                    replica.failed = True
                    replica.last_error = f"cannot start {argv[0]}: {exc.strerror or exc}"
                log.write_line(replica.last_error.encode())
                self._publish()
                return
            started = time.monotonic()
            with self._lock:
                replica.proc = proc
                replica.port = port
                replica.pid = proc.pid
                replica.start_time = process_start_time(proc.pid)
                replica.ready = False
                replica.probe = "not probed yet"
                replica.started = time.time()
            self._publish()
            log.write_line(f"modelseal-local: started pid {proc.pid} on 127.0.0.1:{port}".encode())
            pump = threading.Thread(
                target=self._pump, args=(replica, proc, log), daemon=True, name="log-pump"
            )
            pump.start()
            if self._stopping.is_set():  # stop() may have run before proc was recorded
                _signal_group(proc, signal.SIGTERM)
            self._watch(replica, proc, started, log)
            if self._stopping.is_set():
                # stop() signalled the replicas it saw; one started meanwhile got
                # SIGTERM above. Either way it has the grace period, then SIGKILL.
                try:
                    proc.wait(policy.grace_s)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
            code = proc.wait()
            # Whatever the replica left in its session (``--workers`` children of
            # a killed parent) would hold its port and its log pipe: gone too.
            _signal_group(proc, signal.SIGKILL, leader_exited=True)
            pump.join(5)
            uptime = time.monotonic() - started
            with self._lock:
                replica.ready = False
                replica.pid = 0
                replica.last_exit = code
                replica.started = 0.0
            if self._stopping.is_set():
                return
            log.write_line(f"modelseal-local: replica exited with {_describe(code)}".encode())
            if code in PERMANENT_EXIT_CODES:
                with self._lock:
                    replica.failed = True
                    if not replica.last_error:
                        replica.last_error = f"exited with {_describe(code)}"
                self._publish()
                return
            quick = quick + 1 if uptime < policy.stable_s else 1
            if quick >= policy.max_quick_crashes:
                with self._lock:
                    replica.failed = True
                    replica.last_error = (
                        f"crashed {quick} times in a row, last {_describe(code)}"
                        + (f": {replica.last_error}" if replica.last_error else "")
                    )
                self._publish()
                return
            with self._lock:
                replica.restarts += 1
            self._publish()
            delay = min(policy.backoff_initial_s * 2 ** (quick - 1), policy.backoff_max_s)
            if self._stopping.wait(delay):
                return

    def _pump(
        self, replica: _ReplicaState, proc: subprocess.Popen[bytes], log: RotatingLog
    ) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write_line(line)
            text = line.decode("utf-8", "replace").strip()
            if text.startswith("error: "):
                with self._lock:
                    replica.last_error = text[:500]
        proc.stdout.close()

    def _watch(
        self,
        replica: _ReplicaState,
        proc: subprocess.Popen[bytes],
        started: float,
        log: RotatingLog,
    ) -> None:
        """Health-check ``proc`` until it exits or is killed for failing its probes."""
        policy = self.plan.policy
        ever_ready = False
        live_failures = 0
        while proc.poll() is None:
            if self._stopping.wait(policy.health_interval_s) or proc.poll() is not None:
                return
            failure = _probe(replica.port, "/v2/health/ready", policy.health_interval_s)
            ready = failure is None
            changed = flipped = False
            with self._lock:
                flipped = replica.ready != ready
                # A new reason is published too (not each repeat of one): in
                # process mode status.json is all a later status() can read.
                if replica.ready != ready or replica.probe != (failure or ""):
                    replica.ready = ready
                    replica.probe = failure or ""
                    changed = True
                self._ever_ready = self._ever_ready or ready
                if ready:
                    replica.last_error = "" if not ever_ready else replica.last_error
            if flipped:
                # In the replica's log too: what the supervisor saw, next to what
                # the replica printed, is what tells a slow start from a bad probe.
                log.write_line(
                    b"modelseal-local: ready"
                    if ready
                    else f"modelseal-local: not ready: {failure}".encode()
                )
            if changed:
                self._publish()
            if ready:
                ever_ready = True
                live_failures = 0
                continue
            if not ever_ready:
                if time.monotonic() - started > policy.startup_s:
                    self._kill(replica, proc, f"not ready within {policy.startup_s:g} s")
                    return
                continue
            if _probe(replica.port, "/v2/health/live", policy.health_interval_s) is None:
                live_failures = 0
                continue
            live_failures += 1
            if live_failures >= policy.liveness_failures:
                self._kill(replica, proc, f"failed {live_failures} liveness checks")
                return

    def _kill(self, replica: _ReplicaState, proc: subprocess.Popen[bytes], why: str) -> None:
        with self._lock:
            replica.last_error = f"killed: {why}"
        _signal_group(proc, signal.SIGKILL)

    # --- the NodePort --------------------------------------------------------------

    def _ready_ports(self) -> list[int]:
        with self._lock:
            return [r.port for r in self._replicas if r.ready and r.pid]

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ports = self._ready_ports()
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for attempt in range(len(ports)):
            self._rr += 1
            port = ports[(self._rr + attempt) % len(ports)]
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                break
            except (OSError, TimeoutError):
                continue
        if upstream is None:
            with contextlib.suppress(Exception):
                writer.write(_UNAVAILABLE)
                await writer.drain()
            writer.close()
            return
        up_reader, up_writer = upstream
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    # --- status ------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The deployment's state as plain data (what ``status.json`` holds)."""
        with self._lock:
            restarts = sum(r.restarts for r in self._replicas)
            replicas: list[dict[str, Any]] = [
                {
                    "index": r.index,
                    "port": r.port,
                    "pid": r.pid,
                    "start_time": r.start_time,
                    "ready": r.ready,
                    "restarts": r.restarts,
                    "failed": r.failed,
                    "last_error": r.last_error,
                    "last_exit": r.last_exit,
                    "probe": r.probe,
                    "started": r.started,
                }
                for r in self._replicas
            ]
            stopped = self._stopped
        ready = sum(1 for r in replicas if r["ready"])
        failed = [r for r in replicas if r["failed"]]
        if stopped:
            phase, message = "Stopped", "stopped with its supervisor"
        elif failed:
            first = failed[0]
            phase = "Failed"
            message = f"replica {first['index']}: {first['last_error']}"
        elif ready >= self.plan.replicas:
            phase, message = "Running", ""
        else:
            waiting = [r for r in replicas if not r["ready"]]
            errors = [r["last_error"] for r in waiting if r["last_error"]]
            # Pending only until the first replica has ever been ready.
            phase = "Degraded" if ready or restarts or self._ever_ready else "Pending"
            message = (
                f"{len(waiting)} of {self.plan.replicas} replica(s) not ready: "
                + "; ".join(_why_not_ready(r) for r in waiting)
                + (f"; last error: {errors[0]}" if errors else "")
            )
        return {
            "phase": phase,
            "message": message,
            "replicas": replicas,
            "ready_replicas": ready,
            "restarts": restarts,
            "supervisor_pid": os.getpid(),
            "mode": self.mode,
            "updated": time.time(),
        }

    def _publish(self) -> None:
        """Write the state now; publishers write in the order they took their snapshots.

        Snapshot and rename are one step under ``_publish_lock``: every replica
        thread publishes, often at the same probe tick, and a thread
        descheduled between its snapshot and its rename used to replace a
        newer status with its older one. Nothing changed after that, so
        nothing republished, and a process-mode deployment read "1 of 2
        ready" until its timeout (the CI flake of
        ``test_a_killed_supervisor_leaves_stopped_and_apply_takes_over``).
        """
        with self._publish_lock, contextlib.suppress(OSError):
            write_json_atomic(self.state_dir / STATUS_FILE, self.snapshot())
        if self._on_change is not None:
            self._on_change()


def _why_not_ready(replica: dict[str, Any]) -> str:
    """One replica's state in a few words: a user (or a test's assertion) sees which
    replica is stuck, for how long, and what its readiness probe got."""
    head = f"replica {replica['index']}"
    if not replica["pid"]:
        return f"{head} not running" + (
            f" (last {_describe(replica['last_exit'])})" if replica["last_exit"] is not None else ""
        )
    # A time, not an age: status.json is read long after it was written.
    up = (
        f", started {datetime.fromtimestamp(replica['started'], UTC):%H:%M:%S}Z"
        if replica["started"]
        else ""
    )
    probe = f": readiness probe: {replica['probe']}" if replica["probe"] else ""
    return f"{head} (pid {replica['pid']}, port {replica['port']}{up}){probe}"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _probe(port: int, path: str, timeout: float) -> str | None:
    """``None`` when ``GET path`` answers 200, else why not, in a few words.

    Anything the far end does is a failed probe, never an exception: a
    garbled answer (``http.client.HTTPException`` is no ``OSError``) used to
    end the replica's health thread and leave it unready for good.
    """
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}{path}", timeout=max(0.5, min(timeout, 2.0))
        ) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        return str(reason.strerror or reason) if isinstance(reason, OSError) else str(reason)
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return str(exc.strerror or exc)
    except (http.client.HTTPException, ValueError) as exc:
        return f"bad answer: {type(exc).__name__}: {exc}"[:200]


def _signal_group(proc: subprocess.Popen[bytes], sig: int, *, leader_exited: bool = False) -> None:
    if proc.poll() is not None and not leader_exited:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - not our group after all
        with contextlib.suppress(OSError):
            proc.send_signal(sig)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def main(argv: list[str] | None = None) -> int:
    """Run one deployment detached from the CLI that started it, until SIGTERM."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m modelseal.deploy.backends._supervisor STATE_DIR", file=sys.stderr)
        return 2
    state_dir = Path(args[0])
    plan = Plan.from_json(json.loads((state_dir / PLAN_FILE).read_text(encoding="utf-8")))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    supervisor = Supervisor(plan, state_dir, mode="process")
    try:
        supervisor.start()
    except OSError as exc:
        write_json_atomic(
            state_dir / STATUS_FILE,
            {
                "phase": "Failed",
                "message": (
                    f"cannot listen on {plan.host}:{plan.node_ports[0]}: {exc.strerror or exc}"
                ),
                "replicas": [],
                "ready_replicas": 0,
                "restarts": 0,
                "supervisor_pid": os.getpid(),
                "mode": "process",
                "updated": time.time(),
            },
        )
        return 26
    while not stop.wait(1.0):
        pass
    supervisor.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a process by the local backend
    sys.exit(main())
