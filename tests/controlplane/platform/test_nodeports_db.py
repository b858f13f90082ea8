"""The NodePort records in the database: no double allocation, ever.

Concurrent reservations run in threads, each in its own transaction on its
own connection, against SQLite and (when ``MODELSEAL_TEST_DATABASE_URL`` is
set, as on CI) a real PostgreSQL; a hypothesis state machine checks the
store against a model under arbitrary reserve/release sequences.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import Engine, text

from modelseal.controlplane import db
from modelseal.controlplane.platform.nodeports import DatabaseNodePortStore
from modelseal.controlplane.settings import Settings
from modelseal.deploy.errors import NodePortsExhaustedError, NodePortUnavailableError
from modelseal.deploy.nodeports import NodePortAllocator, NodePortRange


@pytest.fixture
def engine(tmp_path: Path, database_url: str | None) -> Iterator[Engine]:
    eng = db.make_engine(Settings(data_dir=tmp_path / "cp", database_url=database_url))
    db.migrate(eng)
    yield eng
    eng.dispose()


def _store(engine: Engine) -> DatabaseNodePortStore:
    sessions = db.session_factory(engine)
    return DatabaseNodePortStore(lambda: db.transaction(sessions))


def test_concurrent_reservations_never_share_a_port(engine: Engine) -> None:
    """48 deployments of 1-3 ports race for a range of 100: every port is held once,
    the records hold exactly what the callers were told, and the losers of a full
    range are told so (never given a port someone else holds)."""
    store = _store(engine)
    allocator = NodePortAllocator(store, NodePortRange(31000, 31099))
    barrier = threading.Barrier(16)

    def deploy(i: int) -> tuple[str, tuple[int, ...] | None]:
        if i < 16:
            barrier.wait(30)
        try:
            return f"dep-{i}", allocator.allocate(f"dep-{i}", 1 + i % 3)
        except NodePortsExhaustedError:
            return f"dep-{i}", None

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(deploy, range(48)))
    given = [p for _, ports in results if ports for p in ports]
    assert len(given) == len(set(given)), "a port was given twice"
    assert all(31000 <= p <= 31099 for p in given)
    recorded = store.reserved()
    assert {o: ports for o, ports in results if ports} == recorded
    wanted = sum(1 + i % 3 for i in range(48))  # 96 <= 100: everyone fits
    assert wanted <= 100 and len(given) == wanted
    # releasing frees exactly the owner's ports, and they are handed out again
    freed = allocator.release("dep-0")
    assert freed == recorded["dep-0"]
    assert allocator.allocate("late", 1) == (min(freed),)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM platform_node_ports")).scalar_one() == 96


def test_the_primary_key_refuses_a_chooser_that_ignores_the_records(engine: Engine) -> None:
    store = _store(engine)
    assert store.reserve("a", lambda used: (31000,)) == (31000,)
    with pytest.raises(NodePortUnavailableError):
        store.reserve("b", lambda used: (31000,))
    # a retried deployment keeps its ports, the chooser is not even asked
    assert store.reserve("a", lambda used: pytest.fail("asked again")) == (31000,)
    assert store.reserved() == {"a": (31000,)}


class _Model(RuleBasedStateMachine):
    """Arbitrary reserve/release sequences: the store agrees with a dict, ports stay unique."""

    def __init__(self) -> None:
        super().__init__()
        self.store = _store(_Model.engine)
        with _Model.engine.begin() as conn:
            conn.execute(text("DELETE FROM platform_node_ports"))
        self.allocator = NodePortAllocator(self.store, NodePortRange(30000, 30011))
        self.model: dict[str, tuple[int, ...]] = {}

    engine: Engine

    @rule(owner=st.sampled_from(["a", "b", "c", "d", "e", "f"]), count=st.integers(1, 4))
    def reserve(self, owner: str, count: int) -> None:
        free = 12 - sum(len(p) for p in self.model.values())
        try:
            ports = self.allocator.allocate(owner, count)
        except NodePortsExhaustedError:
            assert owner not in self.model and free < count
            return
        except Exception:
            assert owner in self.model and len(self.model[owner]) != count
            return
        if owner in self.model:
            assert ports == self.model[owner]
        self.model[owner] = ports

    @rule(owner=st.sampled_from(["a", "b", "c", "d", "e", "f"]))
    def release(self, owner: str) -> None:
        assert self.allocator.release(owner) == self.model.pop(owner, ())

    @invariant()
    def agrees(self) -> None:
        recorded = self.store.reserved()
        assert recorded == self.model
        ports = [p for held in recorded.values() for p in held]
        assert len(ports) == len(set(ports))


def test_store_matches_a_model_under_any_sequence(engine: Engine) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    _Model.engine = engine
    run_state_machine_as_test(
        _Model,
        settings=settings(max_examples=25, stateful_step_count=12, deadline=None, database=None),
    )
