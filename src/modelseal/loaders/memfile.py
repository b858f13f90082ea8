"""In-memory files for frameworks that will only open a path.

Some loaders accept nothing but file names, or are far better at them
(PaddlePaddle: its PIR loader reads ``model.json`` and ``model.pdiparams``
only from paths and crashes on in-memory buffers; its legacy in-memory
API costs ten times the model's size in memory). For them,
each decrypted file becomes an anonymous memory file (``memfd_create``)
that is never linked into any file system, and the framework is handed a
path to it: a symlink named like the original file (the suffix is what
tells the framework the format) pointing at ``/proc/<pid>/fd/<n>``.

What this exposes and for how long (docs/threat-model.md, "In-memory
files"):

- The memfd exists from :meth:`MemoryFiles.add` until :meth:`MemoryFiles.close`
  (the end of the ``with`` block). While it is open, a process running as
  the same user (or root) can open ``/proc/<pid>/fd/<n>`` and read it, as
  it could read the process's memory; nobody else can.
- The symlinks exist only inside :meth:`MemoryFiles.linked`, in a fresh
  0700 directory of their own; they hold a ``/proc`` path, no model bytes,
  and are removed when the block ends, even on error.
- Each memfd is ``MFD_CLOEXEC`` (a child process inherits nothing) and is
  sealed against writing, growing and shrinking before any path to it
  exists, so the bytes the framework parses are exactly the authenticated
  plaintext: another same-user process that opens the path for writing
  cannot swap them between decryption and parsing.
- Its pages are shared memory: like the rest of the process's memory they
  can reach a swap device, and nowhere else on disk.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from modelseal.errors import LoaderError

# Not in Python 3.11's os module. Since Linux 6.3 it marks the memfd
# non-executable for good (and silences the kernel's vm.memfd_noexec
# warning); older kernels reject it with EINVAL and we retry without it.
_MFD_NOEXEC_SEAL = 0x0008

Fill = Callable[[memoryview], None]


def supported() -> bool:
    """True where in-memory files work: Linux with memfd_create, sealing and /proc."""
    if not sys.platform.startswith("linux"):
        return False
    import fcntl  # not on Windows: imported only here, so `import modelseal` works there

    return (
        hasattr(os, "memfd_create")
        and hasattr(os, "MFD_ALLOW_SEALING")
        and hasattr(fcntl, "F_ADD_SEALS")
        and os.path.isdir(f"/proc/{os.getpid()}/fd")
    )


def _seal(fd: int) -> None:
    import fcntl

    seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)


def _check_name(name: str) -> None:
    # The name becomes a symlink's name inside our private directory: anything
    # that is not one plain path component could point the link elsewhere.
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or len(name.encode("utf-8", "surrogatepass")) > 200
    ):
        raise ValueError(f"in-memory file name must be one plain file name, got {name!r}")


def _memfd_create(name: str) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        try:
            return os.memfd_create(f"modelseal:{name}", flags | _MFD_NOEXEC_SEAL)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        return os.memfd_create(f"modelseal:{name}", flags)
    except OSError as exc:  # EMFILE, ENOMEM: the process's limits, not the model
        raise LoaderError(f"could not create an in-memory file: {exc.strerror}") from None


def _private_folder() -> Path:
    # Not tempfile.gettempdir(): on first use it probes each candidate by
    # creating and writing a file there, and loading must open no file for
    # writing (tests/test_no_plaintext_on_disk.py). mkdtemp(dir=...) does not.
    candidates = [
        tempfile.tempdir,
        os.environ.get("TMPDIR"),
        os.environ.get("TEMP"),
        os.environ.get("TMP"),
        "/tmp",  # noqa: S108 (mkdtemp: random name, created 0700 or not at all)
        "/var/tmp",  # noqa: S108
    ]
    for candidate in dict.fromkeys(c for c in candidates if c):
        try:
            return Path(tempfile.mkdtemp(prefix="modelseal-mem-", dir=candidate))
        except OSError:
            continue
    raise LoaderError("no writable temporary folder for the in-memory files' links")


class MemoryFiles:
    """Named, sealed, in-memory files, reachable by path only inside :meth:`linked`.

    >>> with MemoryFiles() as files:
    ...     files.add_bytes("model.json", program)
    ...     files.add("model.pdiparams", size, lambda view: decrypt_into(view))
    ...     with files.linked() as folder:
    ...         predictor = framework.load(folder / "model.json", folder / "model.pdiparams")
    ... # every memfd is closed here; the symlinks went when ``linked`` ended

    Raises :class:`LoaderError` where the platform has no memfd (not Linux,
    or ``/proc`` not mounted): there is no way to give such a framework a
    path without writing plaintext to a file system.
    """

    def __init__(self) -> None:
        if not supported():
            raise LoaderError(
                "this loader needs in-memory files (Linux memfd_create and /proc), "
                "which this platform does not have"
            )
        self._fds: dict[str, int] = {}
        self._closed = False

    # --- contents --------------------------------------------------------------

    def add(self, name: str, size: int, fill: Fill) -> None:
        """A file of ``size`` bytes that ``fill`` writes through a writable view.

        ``fill`` writes straight into the memfd's pages (decrypt there, not into
        a buffer that is then copied), and must not keep the view. Seals go on
        after it returns; if it raises, the file is discarded.
        """
        _check_name(name)
        if self._closed:
            raise ValueError("MemoryFiles is closed")
        if name in self._fds:
            raise ValueError(f"in-memory file {name!r} added twice")
        if size < 0:
            raise ValueError("size must not be negative")
        fd = _memfd_create(name)
        try:
            if size:
                try:
                    os.ftruncate(fd, size)
                    mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
                except OSError as exc:
                    raise LoaderError(
                        f"could not allocate {size} bytes of memory for {name}: {exc.strerror}"
                    ) from None
                view = memoryview(mapping)
                try:
                    fill(view)
                finally:
                    view.release()
                # Not in a ``with``/``finally``: when ``fill`` raises, frames in
                # the traceback still hold views of the mapping, so closing it
                # would fail; it unmaps when they are freed. On success it must
                # close here: F_SEAL_WRITE is refused while it is mapped writable.
                mapping.close()
            _seal(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fds[name] = fd

    def add_bytes(self, name: str, data: Any) -> None:
        """A file holding a copy of ``data`` (any buffer)."""
        src = memoryview(data).cast("B")

        def fill(view: memoryview) -> None:
            view[:] = src

        self.add(name, len(src), fill)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._fds)

    def fd(self, name: str) -> int:
        """The open descriptor of ``name`` (read-only use; it is sealed)."""
        return self._fds[name]

    # --- paths -----------------------------------------------------------------

    @contextlib.contextmanager
    def linked(self) -> Iterator[Path]:
        """A private directory where each file appears under its name.

        The directory is created 0700 by :func:`tempfile.mkdtemp` under
        ``TMPDIR`` (else ``/tmp``), holds one symlink per file to ``/proc/<pid>/fd/<n>``, and
        is removed with its links when the block ends. Open the paths inside
        the block; a descriptor opened there stays valid after it.
        """
        if self._closed or not self._fds:
            raise ValueError("no open in-memory files to link")
        folder = _private_folder()
        try:
            pid = os.getpid()
            for name, fd in self._fds.items():
                os.symlink(f"/proc/{pid}/fd/{fd}", folder / name)
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # --- lifetime --------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close every memfd; the kernel frees the pages once nobody holds them."""
        fds, self._fds = self._fds, {}
        self._closed = True
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> MemoryFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A forgotten close must not leak plaintext-holding descriptors.
        if getattr(self, "_fds", None):
            self.close()
