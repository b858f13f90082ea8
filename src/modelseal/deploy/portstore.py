"""NodePort reservations in one JSON file: the store of the standalone CLI.

Without a control plane, ``modelseal deploy apply`` still must never give
two deployments the same NodePort, even when two shells run it at the same
moment. :class:`FileNodePortStore` keeps ``owner -> ports`` in
``nodeports.json`` in the data directory and runs read-choose-write under
an exclusive ``flock`` on a lock file beside it; the file is replaced by
rename, so a crash leaves the old records or the new, never half of them.
The control plane has its own store in its database.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from modelseal.deploy.errors import DeployError, NodePortUnavailableError
from modelseal.deploy.nodeports import Chooser

FORMAT: Final = "modelseal-nodeports/1"


class FileNodePortStore:
    """A :class:`~modelseal.deploy.nodeports.NodePortStore` in a file, safe across processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DeployError(
                f"cannot use the NodePort records in {self.path.parent}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, tuple[int, ...]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise DeployError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError("unknown format")
            return {
                str(owner): tuple(int(p) for p in ports)
                for owner, ports in data["reservations"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DeployError(
                f"{self.path} is not a NodePort record file (fix or remove it; "
                "deployments it listed keep their ports only in their backend)"
            ) from None

    def _write(self, data: dict[str, tuple[int, ...]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        payload = {
            "format": FORMAT,
            "reservations": {owner: list(ports) for owner, ports in sorted(data.items())},
        }
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DeployError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def reserve(self, owner: str, choose: Chooser) -> tuple[int, ...]:
        with self._locked():
            records = self._read()
            held = records.get(owner)
            if held is not None:
                return held
            used = frozenset(p for ports in records.values() for p in ports)
            chosen = tuple(choose(used))
            clash = sorted(used.intersection(chosen))
            if clash or len(set(chosen)) != len(chosen):
                raise NodePortUnavailableError(
                    f"NodePort(s) {clash or list(chosen)} already in use"
                )
            records[owner] = chosen
            self._write(records)
            return chosen

    def release(self, owner: str) -> tuple[int, ...]:
        with self._locked():
            records = self._read()
            held = records.pop(owner, ())
            if held:
                self._write(records)
            return held

    def reserved(self) -> dict[str, tuple[int, ...]]:
        with self._locked():
            return self._read()


__all__ = ["FileNodePortStore"]
