"""Writing outputs without ever destroying what the user had.

Every file modelseal writes (containers, content keys, signing keys,
licenses, vendor records, activation requests) goes through here, so the
rules hold everywhere, in the CLI and the Python API alike:

- an existing output is refused unless the caller passes ``overwrite=True``
  (the CLI's ``--force``): a content key or an unlock secret that is
  overwritten is gone for good;
- an output that is one of the inputs is refused even with ``overwrite``
  (``seal --out model.key --key-file model.key`` once replaced the key with
  the container it opened);
- the bytes go to a temporary file in the target's folder and only then
  appear under the final name, so a crash, a full disk or Ctrl-C never
  leaves a half-written file that looks complete (:func:`write_file` and
  :func:`stage_file`, used for keys and records, also fsync first); without
  ``overwrite`` the final step is a hard link, which fails atomically if
  another process created the name in the meantime;
- an OS failure names the user's path, never the temporary file, and is an
  :class:`OutputError` (exit 8), not a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from modelseal.errors import OutputError, OutputExistsError

PathLike = str | os.PathLike[str]


def _same(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_output(
    path: PathLike, *, overwrite: bool = False, inputs: Iterable[PathLike | None] = ()
) -> Path:
    """Refuse ``path`` before any work is done: it exists, or it is an input."""
    out = Path(path)
    for item in inputs:
        if item is not None and _same(out, Path(item)):
            raise OutputExistsError(f"{out} is also an input; refusing to write over it")
    if out.is_dir():
        raise OutputExistsError(f"{out} is a directory; give a file name")
    if not overwrite and (out.exists() or out.is_symlink()):
        raise OutputExistsError(f"{out} exists (use --force / overwrite=True to replace it)")
    return out


def os_error(path: PathLike, exc: OSError) -> OutputError:
    """An :class:`OutputError` for ``exc`` that names the user's path."""
    out = Path(path)
    if exc.errno == errno.ENOENT:
        return OutputError(f"cannot write {out}: folder {out.parent} does not exist")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {out}: permission denied")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"cannot write {out}: no space left on the device")
    return OutputError(f"cannot write {out}: {exc.strerror or exc}")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(tmp: Path, path: PathLike, *, overwrite: bool, durable: bool = True) -> None:
    """Give the complete temporary file ``tmp`` its final name; removes ``tmp``.

    ``durable`` also fsyncs the folder so the name survives a power cut. On
    ext4 that commits the journal and with it the file's data: right for a
    key, a gigabyte of disk flushing for a container (which can be sealed
    again), so containers pass ``durable=False``.
    """
    out = Path(path)
    try:
        if overwrite:
            os.replace(tmp, out)
        else:
            try:
                os.link(tmp, out)
            except FileExistsError:
                raise OutputExistsError(
                    f"{out} exists (use --force / overwrite=True to replace it)"
                ) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                # a file system without hard links: a last check, then rename
                if out.exists():
                    raise OutputExistsError(f"{out} exists") from None
                os.replace(tmp, out)
    except OSError as exc:
        raise os_error(out, exc) from None
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        _fsync_dir(out.parent)


def temp_beside(path: PathLike, *, mode: int = 0o644) -> tuple[int, Path]:
    """A new temporary file in ``path``'s folder (same file system, so the rename is atomic)."""
    out = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent or ".")
    except OSError as exc:
        raise os_error(out, exc) from None
    try:
        os.fchmod(fd, mode)
    except OSError as exc:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
        raise os_error(out, exc) from None
    return fd, Path(name)


def stage_file(
    path: PathLike,
    data: bytes,
    *,
    mode: int = 0o644,
    overwrite: bool = False,
    inputs: Iterable[PathLike | None] = (),
) -> Path:
    """Write ``data`` durably to a temporary file beside ``path``; returns it.

    :func:`publish` gives it its name later. Staging first proves the folder
    exists and is writable, and puts the bytes on disk, before anything that
    depends on them (the container a new key opens) is written.
    """
    out = check_output(path, overwrite=overwrite, inputs=inputs)
    fd, tmp = temp_beside(out, mode=mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise os_error(out, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_file(
    path: PathLike,
    data: bytes,
    *,
    mode: int = 0o644,
    overwrite: bool = False,
    inputs: Iterable[PathLike | None] = (),
) -> Path:
    """Write ``data`` to ``path`` atomically, under the rules of this module.

    ``mode`` applies from the first byte (0600 for secrets: there is never a
    moment when others can read them).
    """
    tmp = stage_file(path, data, mode=mode, overwrite=overwrite, inputs=inputs)
    publish(tmp, path, overwrite=overwrite)
    return Path(path)


@contextlib.contextmanager
def removed_on_failure(*paths: Path) -> Iterator[None]:
    """Delete ``paths`` (staged temporary files) if the block fails."""
    try:
        yield
    except BaseException:
        for p in paths:
            with contextlib.suppress(OSError):
                p.unlink(missing_ok=True)
        raise


__all__ = [
    "check_output",
    "os_error",
    "publish",
    "removed_on_failure",
    "stage_file",
    "temp_beside",
    "write_file",
]
