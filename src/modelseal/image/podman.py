"""Running the ``podman`` CLI with the settings these machines need, and nothing else.

Rootful Podman from Debian's packages runs real OCI containers here, but
two of its defaults fail on these VMs: ``crun`` rejects the hybrid cgroup
set-up (so ``runc`` with the ``cgroupfs`` manager), and the default
ulimits exceed the VM's caps (so explicit ``nofile``/``nproc``). Those go
into a ``containers.conf`` that this module writes under its own state
directory and passes through ``CONTAINERS_CONF``; ``/etc`` is never edited,
so nothing else on the machine changes (docs/deploy.md, "Podman settings").

Every call has a timeout, and a failure is an :class:`ImageError` carrying
podman's own last line of stderr, never a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Final

from modelseal._fs import write_file
from modelseal.image.errors import ImageError, PodmanCommandError, PodmanNotInstalledError

#: What this machine's podman needs (docs/deploy.md): runc, cgroupfs, a file
#: event log (no journald in a container or CI VM), ulimits within the VM's caps.
CONTAINERS_CONF: Final = """\
# Written by modelseal (modelseal.image.podman); passed through CONTAINERS_CONF.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

#: Most podman calls answer in well under a second; builds and saves get their own.
DEFAULT_TIMEOUT_S: Final = 120.0


def default_state_dir() -> Path:
    """``$MODELSEAL_PODMAN_DIR``, else ``$XDG_STATE_HOME/modelseal/podman``."""
    env = os.environ.get("MODELSEAL_PODMAN_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "modelseal" / "podman"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class Podman:
    """The ``podman`` executable with our ``containers.conf``.

    ``containers_conf`` names an existing file to use instead of the one we
    write (a site with its own settings); ``executable`` another podman.
    """

    def __init__(
        self,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        executable: str | None = None,
        containers_conf: str | os.PathLike[str] | None = None,
        storage_root: str | os.PathLike[str] | None = None,
    ) -> None:
        found = executable or shutil.which("podman")
        if found is None or not Path(found).exists():
            raise PodmanNotInstalledError(
                "podman is not installed: apt-get install -y podman runc "
                "(and debootstrap to build the base image)"
            )
        self.executable = found
        #: A separate image and container store (``--root``/``--runroot``): a
        #: benchmark's cold build, or a test that must not see the machine's images.
        self.global_args: list[str] = []
        if storage_root is not None:
            root = Path(storage_root)
            self.global_args = ["--root", str(root / "storage"), "--runroot", str(root / "run")]
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        if containers_conf is not None:
            self.containers_conf = Path(containers_conf)
        else:
            self.containers_conf = self.state_dir / "containers.conf"
            self._write_conf()

    def _write_conf(self) -> None:
        try:
            current = self.containers_conf.read_text()
        except OSError:
            current = None
        if current != CONTAINERS_CONF:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            write_file(self.containers_conf, CONTAINERS_CONF.encode(), overwrite=True)

    @property
    def env(self) -> dict[str, str]:
        """The environment podman runs with: ours, plus ``CONTAINERS_CONF``."""
        return {**os.environ, "CONTAINERS_CONF": str(self.containers_conf)}

    def run(
        self,
        args: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        check: bool = True,
        stdin: IO[bytes] | None = None,
        what: str | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``podman ARGS``; :class:`PodmanCommandError` when it fails and ``check``.

        ``on_line`` gets each line of output as it comes (a build's steps, for
        a progress display); the result then holds them as ``stdout``.
        """
        if on_line is not None:
            return self._stream(args, timeout=timeout, check=check, what=what, on_line=on_line)
        try:
            proc = subprocess.run(
                [self.executable, *self.global_args, *args],
                env=self.env,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PodmanCommandError(
                f"{what or 'podman ' + args[0]} did not finish within {timeout:.0f}s",
                returncode=None,
            ) from None
        except OSError as exc:
            raise PodmanNotInstalledError(f"cannot run {self.executable}: {exc}") from None
        if check and proc.returncode != 0:
            detail = _last_line(proc.stderr) or _last_line(proc.stdout) or "no output"
            raise PodmanCommandError(
                f"{what or 'podman ' + args[0]} failed (exit {proc.returncode}): {detail}",
                returncode=proc.returncode,
                stderr=proc.stderr,
            )
        return proc

    def _stream(
        self,
        args: Sequence[str],
        *,
        timeout: float,
        check: bool,
        what: str | None,
        on_line: Callable[[str], None],
    ) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.Popen(
                [self.executable, *self.global_args, *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise PodmanNotInstalledError(f"cannot run {self.executable}: {exc}") from None
        timed_out = threading.Event()

        def _kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, _kill)
        timer.start()
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                lines.append(line)
                del lines[:-200]  # enough for the error; a build prints thousands
                on_line(line)
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        name = what or "podman " + args[0]
        if timed_out.is_set():
            raise PodmanCommandError(
                f"{name} did not finish within {timeout:.0f}s", returncode=None
            )
        text = "\n".join(lines)
        if check and proc.returncode != 0:
            raise PodmanCommandError(
                f"{name} failed (exit {proc.returncode}): {_last_line(text) or 'no output'}",
                returncode=proc.returncode,
                stderr=text,
            )
        return subprocess.CompletedProcess(list(args), proc.returncode, text, "")

    def image_exists(self, ref: str) -> bool:
        return self.run(["image", "exists", ref], check=False).returncode == 0

    def image_id(self, ref: str) -> str:
        """The full image id (``sha256:...`` without the prefix, as podman prints it)."""
        out = self.run(["image", "inspect", "--format", "{{.Id}}", ref]).stdout.strip()
        return out.splitlines()[0] if out else ""

    def image_digest(self, ref: str) -> str:
        """The manifest digest (``sha256:...``) a registry would report after a push."""
        out = self.run(["image", "inspect", "--format", "{{.Digest}}", ref]).stdout.strip()
        return out.splitlines()[0] if out else ""


__all__ = [
    "CONTAINERS_CONF",
    "DEFAULT_TIMEOUT_S",
    "ImageError",
    "Podman",
    "default_state_dir",
]
