"""The group committer's failures are 503s a device retries, never a bare 500."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from modelseal.controlplane.errors import ServerUnavailableError
from modelseal.controlplane.services.heartbeats import GroupCommitter


class _StuckDatabase:
    """A PlainSQL stand-in whose writes wait, as a locked SQLite file makes them."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.rows: list[dict[str, Any]] = []

    def sql(self, statement: str) -> str:
        return statement

    def connect(self) -> object:
        return object()

    def write_many(self, conn: object, statement: str, rows: list[dict[str, Any]]) -> list[bool]:
        self.release.wait(10)
        self.rows.extend(rows)
        return [True] * len(rows)


def test_a_commit_that_does_not_finish_in_time_is_unavailable_not_a_crash() -> None:
    # review finding: TimeoutError escaped the heartbeat handler as a 500
    db = _StuckDatabase()
    committer = GroupCommitter(db)  # type: ignore[arg-type]
    try:
        with pytest.raises(ServerUnavailableError, match="database is busy"):
            committer.submit({"id": "dev_1"}, timeout=0.2)
    finally:
        db.release.set()
    assert committer.submit({"id": "dev_2"}, timeout=5) is True
    assert {"id": "dev_2"} in db.rows
