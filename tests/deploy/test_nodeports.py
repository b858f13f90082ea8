"""NodePort recommendation (pure, property-tested) and reservation (atomic, even under threads)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.deploy import (
    InMemoryNodePortStore,
    NodePortAllocator,
    NodePortRange,
    NodePortRangeError,
    NodePortReservationError,
    NodePortsExhaustedError,
    NodePortUnavailableError,
    check_node_ports,
    recommend_node_ports,
)


def has_free_run(count: int, used: set[int], r: NodePortRange) -> bool:
    return any(
        all(p not in used for p in range(start, start + count))
        for start in range(r.start, r.end - count + 2)
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[NodePortRange, set[int], int]:
    start = draw(st.integers(1, 65535 - 1))
    end = draw(st.integers(start, min(65535, start + 300)))
    r = NodePortRange(start, end)
    # Used ports inside, around and far outside the range.
    used = draw(
        st.sets(st.integers(max(1, start - 20), min(65535, end + 20)), max_size=len(r) + 20)
    )
    used |= draw(st.sets(st.integers(1, 65535), max_size=20))
    count = draw(st.integers(1, 12))
    return r, used, count


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_recommendation_properties(scenario: tuple[NodePortRange, set[int], int]) -> None:
    r, used, count = scenario
    free = [p for p in range(r.start, r.end + 1) if p not in used]
    if len(free) < count:
        with pytest.raises(NodePortsExhaustedError, match=f"{count} NodePort"):
            recommend_node_ports(count, used, r)
        return
    ports = recommend_node_ports(count, used, r)
    assert len(ports) == count == len(set(ports))  # N distinct
    assert all(p in r for p in ports)  # never out of range
    assert not set(ports) & used  # never a used port
    contiguous = list(ports) == list(range(ports[0], ports[0] + count))
    if has_free_run(count, used, r):
        assert contiguous
        # ... and the lowest such run, so the same records give the same answer.
        first = next(
            s
            for s in range(r.start, r.end - count + 2)
            if all(p not in used for p in range(s, s + count))
        )
        assert ports[0] == first
    else:
        assert list(ports) == free[:count]  # the lowest free ports when no run exists


def test_examples() -> None:
    assert recommend_node_ports(1, []) == (30000,)
    assert recommend_node_ports(3, [30000, 30002, 30003, 30007]) == (30004, 30005, 30006)
    small = NodePortRange(100, 105)
    assert recommend_node_ports(3, [101, 103, 105], small) == (100, 102, 104)
    with pytest.raises(NodePortsExhaustedError, match="only 3 free in 100-105"):
        recommend_node_ports(4, [101, 103, 105], small)
    with pytest.raises(NodePortUnavailableError):
        recommend_node_ports(0, [])


def test_range_parsing() -> None:
    assert NodePortRange.parse("30000-32767") == NodePortRange()
    assert NodePortRange.parse(" 8080 ") == NodePortRange(8080, 8080)
    assert len(NodePortRange()) == 2768 and str(NodePortRange()) == "30000-32767"
    for bad in ["", "a-b", "32767-30000", "0-10", "1-70000", "1-2-3"]:
        with pytest.raises(NodePortRangeError):
            NodePortRange.parse(bad)


def test_check_requested_ports() -> None:
    assert check_node_ports([30080], 1) == (30080,)
    with pytest.raises(NodePortUnavailableError, match="exposes 2 port"):
        check_node_ports([30080], 2)
    with pytest.raises(NodePortUnavailableError, match="repeat"):
        check_node_ports([30080, 30080], 2)
    with pytest.raises(NodePortUnavailableError, match=r"\[40000\] outside"):
        check_node_ports([40000], 1)
    with pytest.raises(NodePortUnavailableError, match="already in use"):
        check_node_ports([30080], 1, used=[30080])


def test_allocator_reserves_releases_and_avoids_the_cluster() -> None:
    cluster = {30000, 30001}
    allocator = NodePortAllocator(InMemoryNodePortStore(), cluster_used=lambda: cluster)
    a = allocator.allocate("models/a", 2)
    assert a == (30002, 30003)
    assert allocator.allocate("models/a", 2) == a  # a retried deploy keeps its ports
    b = allocator.allocate("models/b", 1)
    assert b == (30004,)
    with pytest.raises(NodePortReservationError, match="already holds"):
        allocator.allocate("models/a", 3)
    with pytest.raises(NodePortUnavailableError, match="already in use"):
        allocator.allocate("models/c", 1, requested=[30003])
    assert allocator.allocate("models/c", 1, requested=[30100]) == (30100,)
    assert allocator.release("models/a") == a
    assert allocator.release("models/a") == ()
    assert allocator.allocate("models/d", 2) == a  # freed ports are used again
    assert allocator.store.reserved() == {"models/b": b, "models/c": (30100,), "models/d": a}


def test_store_refuses_a_chooser_that_ignores_the_records() -> None:
    store = InMemoryNodePortStore()
    store.reserve("a", lambda used: [30000])

    def careless(used: frozenset[int]) -> Sequence[int]:
        return [30000]

    with pytest.raises(NodePortUnavailableError):
        store.reserve("b", careless)
    assert store.reserved() == {"a": (30000,)}


def test_exhaustion_is_typed_and_leaves_records_alone() -> None:
    allocator = NodePortAllocator(InMemoryNodePortStore(), NodePortRange(30000, 30002))
    allocator.allocate("a", 2)
    with pytest.raises(NodePortsExhaustedError) as info:
        allocator.allocate("b", 2)
    assert info.value.exit_code == 30
    assert allocator.store.reserved() == {"a": (30000, 30001)}


def test_concurrent_reservations_never_share_a_port() -> None:
    allocator = NodePortAllocator(InMemoryNodePortStore(), NodePortRange(30000, 30199))
    barrier = threading.Barrier(8)
    results: dict[str, tuple[int, ...]] = {}
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        barrier.wait(timeout=10)
        for i in range(10):
            owner = f"w{n}-{i}"
            try:
                results[owner] = allocator.allocate(owner, 1 + (i % 3))
            except NodePortsExhaustedError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    ports = [p for held in results.values() for p in held]
    assert len(ports) == len(set(ports))  # no double allocation
    assert sum(len(v) for v in results.values()) + 0 <= 200
    assert len(results) + len(failures) == 80
    assert allocator.store.reserved() == results


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["allocate", "release"]), st.integers(0, 5), st.integers(1, 4)),
        max_size=40,
    ),
    st.sets(st.integers(30000, 30030), max_size=10),
)
def test_any_sequence_of_allocations_and_releases_keeps_the_records_sound(
    ops: list[tuple[str, int, int]], cluster: set[int]
) -> None:
    r = NodePortRange(30000, 30030)
    allocator = NodePortAllocator(InMemoryNodePortStore(), r, cluster_used=lambda: cluster)
    model: dict[str, tuple[int, ...]] = {}
    for op, n, count in ops:
        owner = f"d{n}"
        if op == "release":
            assert allocator.release(owner) == model.pop(owner, ())
            continue
        held = model.get(owner)
        try:
            ports = allocator.allocate(owner, count)
        except NodePortReservationError:
            assert held is not None and len(held) != count
            continue
        except NodePortsExhaustedError:
            used = cluster | {p for v in model.values() for p in v}
            assert held is None and len(r) - len(used & set(range(r.start, r.end + 1))) < count
            continue
        if held is not None:
            assert ports == held
        model[owner] = ports
        assert all(p in r and p not in cluster for p in ports)
        everything = [p for v in model.values() for p in v]
        assert len(everything) == len(set(everything))
    assert allocator.store.reserved() == model
