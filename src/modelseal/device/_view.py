"""Is this process's view of the machine the host's own? (issue #8, item 3)

Every Linux component is read from a file, and an unprivileged user
namespace (``unshare -Urmu``) can bind-mount copies of another machine's
``/etc/machine-id``, ``/proc/cpuinfo`` and ``/sys/block/*/serial`` over
them and set the hostname: with no root anywhere, a license bound to all
components opened on another machine. Two kinds of evidence, both taken
from system calls a mount namespace cannot rewrite:

- **A non-initial user namespace.** The initial namespace maps every id:
  ``/proc/self/uid_map`` reads ``0 0 4294967295``. Any other map (``0 1000
  1`` after ``unshare -Ur``) means a user namespace, and that is treated
  like a container. The map is trusted only after ``fstatfs`` says the
  file is on a real procfs and it is not a bind mount (below).
- **An overlaid component file.** Each file is opened and checked *on the
  descriptor that is read*: ``fstatfs`` must report procfs for ``/proc``
  files and sysfs for ``/sys`` files (a copied file bind-mounted over them
  lies on ext4 or tmpfs), and the descriptor's mount id (from
  ``/proc/self/fdinfo``) must be the mount of its directory (a bind mount
  of one file is its own mount) and, for files in ``/etc`` and ``/var``, the
  mount of ``/``. A namespace can mount a *fresh* procfs or sysfs, but
  those show the kernel's real values, so the only way left to present
  other values is a file, which these checks see.

The CPUID instruction would be a source no mount can overlay, but pure
Python cannot execute it; reading ``/proc/cpuinfo`` through a descriptor
checked to be the kernel's procfs gives the same guarantee against a
namespace. Likewise the root disk's serial is the kernel's sysfs attribute
(checked the same way) rather than an ATA/NVMe identify ioctl, which needs
root and does not exist for virtio disks.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

PROC_SUPER_MAGIC: Final = 0x9FA0
SYSFS_MAGIC: Final = 0x62656572
#: The identity map of the initial user namespace.
INITIAL_UID_MAP: Final = ("0", "0", "4294967295")

_STATFS_BUFFER: Final = 256  # struct statfs is 120 bytes on 64-bit Linux; f_type comes first


def _libc() -> ctypes.CDLL | None:
    """The C library already loaded in this process (Linux only: ``fstatfs``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):
        return None


_LIBC: Final = _libc()


def fd_fs_type(fd: int) -> int | None:
    """``f_type`` of the filesystem ``fd`` lies on (``fstatfs``), or None if unknown."""
    if _LIBC is None or not hasattr(_LIBC, "fstatfs"):
        return None
    buf = ctypes.create_string_buffer(_STATFS_BUFFER)
    if _LIBC.fstatfs(ctypes.c_int(fd), buf) != 0:
        return None
    # f_type is the first member: a long (__fsword_t) on every Linux ABI we run on.
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def fd_mount_id(fd: int) -> int | None:
    """The id of the mount ``fd`` lies on, from ``/proc/self/fdinfo`` (None if unknown)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            text = f.read(4096).decode("ascii", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "mnt_id":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def _path_mount_id(path: str) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return fd_mount_id(fd)
    finally:
        os.close(fd)


def _expected_fs(path: str) -> int | None:
    if path == "/proc" or path.startswith("/proc/"):
        return PROC_SUPER_MAGIC
    if path == "/sys" or path.startswith("/sys/"):
        return SYSFS_MAGIC
    return None


@dataclass
class HostView:
    """Checks reads against the host's own view; collects what it finds as evidence.

    ``evidence`` holds ``"userns:..."`` and ``"overlay:<path>"`` findings;
    ``overlaid`` the paths whose contents must not be used.
    """

    evidence: list[str] = field(default_factory=list)
    overlaid: set[str] = field(default_factory=set)
    _proc_ok: bool | None = None
    _root_mount: int | None = None

    def _note(self, finding: str) -> None:
        if finding not in self.evidence:
            self.evidence.append(finding)

    def proc_is_real(self) -> bool:
        """Is ``/proc`` the kernel's procfs (so fdinfo and uid_map can be believed)?"""
        if self._proc_ok is None:
            ok = True
            for top, magic in (("/proc", PROC_SUPER_MAGIC), ("/sys", SYSFS_MAGIC)):
                try:
                    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    kind = fd_fs_type(fd)
                finally:
                    os.close(fd)
                if kind is not None and kind != magic:
                    self._note(f"overlay:{top}")
                    self.overlaid.add(top)
                    ok = ok and top != "/proc"
            self._proc_ok = ok
            self._root_mount = _path_mount_id("/") if ok else None
        return self._proc_ok

    def fd_is_genuine(self, fd: int, path: str) -> bool:
        """Is the open ``fd`` of ``path`` the host's own file (not a file mounted over it)?"""
        if not self.proc_is_real() or any(
            path == top or path.startswith(top + "/") for top in self.overlaid
        ):
            return False
        expected = _expected_fs(path)
        kind = fd_fs_type(fd)
        if expected is not None and kind is not None and kind != expected:
            return False
        mount = fd_mount_id(fd)
        if mount is None:
            return True  # no fdinfo (very old kernel): the filesystem check above stands
        parent = _path_mount_id(os.path.dirname(path) or "/")
        if parent is not None and parent != mount:
            return False
        # /etc and /var live on the root filesystem unless a namespace put something there
        return not (
            path.startswith(("/etc/", "/var/"))
            and self._root_mount is not None
            and mount != self._root_mount
        )

    def read(self, path: Path, limit: int) -> str | None:
        """The text of ``path`` if it is the host's own file; None (and evidence) if not."""
        text_path = os.fspath(path)
        try:
            fd = os.open(text_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            try:
                # sysfs attributes are often reached through symlinks (class/ -> devices/)
                fd = os.open(os.path.realpath(text_path), os.O_RDONLY | os.O_CLOEXEC)
                text_path = os.path.realpath(text_path)
            except OSError:
                return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            if not self.fd_is_genuine(fd, text_path):
                self._note(f"overlay:{os.fspath(path)}")
                self.overlaid.add(os.fspath(path))
                return None
            data = os.read(fd, limit)
        except OSError:
            return None
        finally:
            os.close(fd)
        return data.decode("utf-8", errors="replace")

    def user_namespace(self) -> None:
        """Note a non-initial user namespace (from a checked ``/proc/self/uid_map``)."""
        text = self.read(Path("/proc/self/uid_map"), 4096)
        if text is None:
            return  # no user namespaces in this kernel, or overlaid (noted by read)
        lines = [line.split() for line in text.splitlines() if line.strip()]
        if lines != [list(INITIAL_UID_MAP)]:
            self._note("userns:uid_map")

    def in_user_namespace(self) -> bool:
        self.user_namespace()
        return "userns:uid_map" in self.evidence
