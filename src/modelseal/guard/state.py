"""The guard's persistent state: usage, clock high-water mark, heartbeats, unlocks.

One small file per license in the state directory, encrypted and
authenticated (AES-256-GCM) under a key derived from the license KEK, so it
opens only on the bound device and any edit is detected. Every update is a
transaction under an exclusive ``flock`` on a sibling lock file, which makes
counting correct across threads and processes on one device; the new state
is written to a temporary file, fsynced and renamed over the old one, so a
crash leaves either the old or the new state, never a torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from modelseal.crypto import new_aead
from modelseal.errors import DecryptionError
from modelseal.license.errors import StateTamperedError

MAGIC: Final = b"MSSTATE1"


@dataclass
class GuardState:
    license_id: str
    calls_reserved: int = 0  # calls handed to processes; >= calls actually made
    high_water: float | None = None  # newest wall-clock time observed (Unix seconds)
    trusted: float | None = None  # forward-only clock: first time + every forward step seen
    last_wall: float | None = None  # the wall clock at the last observation
    last_heartbeat_ok: float | None = None
    first_seen: float | None = None
    unlock_serials: list[int] = field(default_factory=list)
    unlock_failures: list[float] = field(default_factory=list)  # for rate limiting
    unlock_until: float | None = None
    audit_head: list[object] | None = None  # [seq, hash] of the last audit record
    revoked: bool = False
    # server-side quotas (licenses with limits.offline_calls): calls_reserved may
    # run up to lease_end on leases, plus the offline allowance unless the server
    # said QUOTA_EXCEEDED (quota_blocked); unspent leased calls lapse at lease_exp
    lease_end: int = 0
    lease_exp: float | None = None
    quota_blocked: bool = False
    revocations_iat: int | None = None  # issued-at of the newest revocation list imported


class StateStore:
    def __init__(self, path: Path, key: bytes, license_id: str) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._aead = new_aead("aes-256-gcm", key)
        self._aad = b"modelseal/guard-state/v1\x00" + license_id.encode()
        self._license_id = license_id
        self._thread_lock = threading.Lock()

    def after_fork(self) -> None:
        """A forked child gets a fresh thread lock: the parent's may have been held."""
        self._thread_lock = threading.Lock()

    def exists(self) -> bool:
        return self.path.exists()

    def _decode(self, blob: bytes) -> GuardState:
        if not blob.startswith(MAGIC):
            raise StateTamperedError("the guard state file is not a modelseal state file")
        try:
            raw = self._aead.open_random(blob[len(MAGIC) :], self._aad)
            obj = json.loads(raw)
            state = GuardState(**obj)
        except (DecryptionError, ValueError, TypeError):
            raise StateTamperedError(
                "the guard state file was modified or belongs elsewhere"
            ) from None
        if state.license_id != self._license_id:
            raise StateTamperedError("the guard state file belongs to another license")
        return state

    def read(self) -> GuardState | None:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return self._decode(blob)

    def _write(self, state: GuardState) -> None:
        blob = MAGIC + self._aead.seal_random(json.dumps(asdict(state)).encode(), self._aad)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError:
            # A full disk or an I/O error: the old state stays in place, whole
            # (the rename is the commit), and no half-written temporary is left.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[GuardState | None]:
        """The state under a shared lock: no writer changes it while the caller reads.

        The heartbeat takes its time and audit head together here, so beats of
        several processes report heads in the order of their times.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield self.read()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def transaction(self, *, create: bool | Callable[[], bool]) -> Iterator[GuardState]:
        """Exclusive read-modify-write. ``create`` allows a missing file (first run only).

        A callable ``create`` is asked under the lock, only when the file is
        missing: whether a first run is allowed depends on files (the audit
        log) that other processes create, so the question must be asked where
        they cannot be halfway through their own first run.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                state = self.read()
                if state is None:
                    if not (create() if callable(create) else create):
                        raise StateTamperedError("the guard state file was deleted")
                    state = GuardState(license_id=self._license_id)
                yield state
                self._write(state)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
