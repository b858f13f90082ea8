"""The NodePort records in the database: a :class:`~modelseal.deploy.nodeports.NodePortStore`.

``reserve`` reads the used records, lets the allocator choose, and inserts
the chosen ports, all inside the caller's transaction:

- on SQLite every transaction starts with ``BEGIN IMMEDIATE`` (``db.py``),
  so the database write lock is held from the read to the commit;
- on PostgreSQL the table is locked ``IN EXCLUSIVE MODE`` first, which
  queues concurrent reservers behind each other but still lets readers
  (status pages) read. Row locks (``SELECT ... FOR UPDATE``) would not do:
  they lock the rows that exist, not the ports nobody holds yet.

The primary key on ``port`` is the last line of defence: were two
transactions ever to choose the same port, the second insert fails and the
reservation is refused, never double-booked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from sqlalchemy import delete, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelseal.controlplane.models import now_s
from modelseal.controlplane.platform.models import NodePortRecord
from modelseal.deploy.errors import NodePortUnavailableError
from modelseal.deploy.nodeports import Chooser


class DatabaseNodePortStore:
    """NodePort reservations as rows of ``platform_node_ports``.

    ``transaction`` opens the unit of work each call runs in: the request's
    session (the deployment and its ports commit together) or a fresh
    transaction per call (tests, tools).
    """

    def __init__(self, transaction: Callable[[], AbstractContextManager[Session]]) -> None:
        self._transaction = transaction

    @classmethod
    def in_session(cls, session: Session) -> DatabaseNodePortStore:
        """A store that works inside ``session``'s open transaction (committed by its owner)."""

        @contextmanager
        def within() -> Iterator[Session]:
            yield session

        return cls(within)

    def reserve(self, owner: str, choose: Chooser) -> tuple[int, ...]:
        with self._transaction() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("LOCK TABLE platform_node_ports IN EXCLUSIVE MODE"))
            rows = session.execute(select(NodePortRecord.port, NodePortRecord.owner)).all()
            held = tuple(sorted(port for port, who in rows if who == owner))
            if held:
                return held
            used = frozenset(port for port, _ in rows)
            chosen = tuple(choose(used))
            clash = sorted(used.intersection(chosen))
            if clash or len(set(chosen)) != len(chosen):
                raise NodePortUnavailableError(
                    f"NodePort(s) {clash or list(chosen)} already in use"
                )
            now = now_s()
            try:
                with session.begin_nested():
                    session.add_all(
                        NodePortRecord(port=p, owner=owner, reserved_at=now) for p in chosen
                    )
                    session.flush()
            except IntegrityError:
                raise NodePortUnavailableError(
                    f"NodePort(s) {list(chosen)} were taken by a concurrent deployment; retry"
                ) from None
            return chosen

    def release(self, owner: str) -> tuple[int, ...]:
        with self._transaction() as session:
            ports = session.execute(
                select(NodePortRecord.port).where(NodePortRecord.owner == owner)
            ).scalars()
            held = tuple(sorted(ports))
            session.execute(delete(NodePortRecord).where(NodePortRecord.owner == owner))
            return held

    def reserved(self) -> dict[str, tuple[int, ...]]:
        with self._transaction() as session:
            result: dict[str, list[int]] = {}
            for port, owner in session.execute(
                select(NodePortRecord.port, NodePortRecord.owner).order_by(NodePortRecord.port)
            ):
                result.setdefault(owner, []).append(port)
            return {owner: tuple(ports) for owner, ports in result.items()}


__all__ = ["DatabaseNodePortStore"]
