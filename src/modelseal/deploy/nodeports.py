"""NodePort recommendation and reservation (the patent's available and used port records).

The choice is a pure function (:func:`recommend_node_ports`): given the
range and every port known to be used, pick N free ports, one contiguous run
when the range still has one (operators open firewall rules per run), else
the lowest free ports. Reservation is separate and goes through a
:class:`NodePortStore`, whose one method runs read-choose-record as one
transaction, so two deployments started at the same moment can never be
given the same port: the in-memory store does it under a lock; the
control plane's database store will do it in one SQL transaction with a
unique constraint on the port as the last line of defence.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from modelseal.deploy.errors import (
    NodePortRangeError,
    NodePortReservationError,
    NodePortsExhaustedError,
    NodePortUnavailableError,
)

#: Kubernetes' default ``--service-node-port-range``.
DEFAULT_START: Final = 30000
DEFAULT_END: Final = 32767


@dataclass(frozen=True, order=True)
class NodePortRange:
    """An inclusive range of ports, e.g. the cluster's ``--service-node-port-range``."""

    start: int = DEFAULT_START
    end: int = DEFAULT_END

    def __post_init__(self) -> None:
        if not (1 <= self.start <= self.end <= 65535):
            raise NodePortRangeError(
                f"node port range {self.start}-{self.end} must satisfy 1 <= start <= end <= 65535"
            )

    @classmethod
    def parse(cls, text: str) -> NodePortRange:
        """``30000-32767`` (Kubernetes' own spelling) or a single port."""
        start, sep, end = text.strip().partition("-")
        try:
            low = int(start)
            high = int(end) if sep else low
        except ValueError:
            raise NodePortRangeError(f"{text!r} is not a port range such as 30000-32767") from None
        return cls(low, high)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port <= self.end

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


#: Kubernetes' default range, the default everywhere a range is optional.
DEFAULT_RANGE: Final = NodePortRange()


def recommend_node_ports(
    count: int, used: Iterable[int], port_range: NodePortRange = DEFAULT_RANGE
) -> tuple[int, ...]:
    """Pick ``count`` free ports: the lowest contiguous run if one exists, else the lowest free.

    Ports in ``used`` outside the range are ignored (they cannot collide).
    Deterministic, so the same records always give the same recommendation.
    """
    if count < 1:
        raise NodePortUnavailableError(f"asked for {count} ports; a Service needs at least one")
    taken = sorted({p for p in used if p in port_range})
    free = len(port_range) - len(taken)
    if free < count:
        raise NodePortsExhaustedError(
            f"{count} NodePort(s) needed but only {free} free in {port_range} "
            f"({len(taken)} used); widen the range or delete a deployment"
        )
    # Gaps between used ports, scanned in order: the first gap wide enough
    # holds the lowest contiguous run.
    previous = port_range.start - 1
    for port in [*taken, port_range.end + 1]:
        if port - previous - 1 >= count:
            return tuple(range(previous + 1, previous + 1 + count))
        previous = port
    chosen: list[int] = []
    candidate = port_range.start
    while len(chosen) < count:
        index = bisect.bisect_left(taken, candidate)
        if index < len(taken) and taken[index] == candidate:
            candidate += 1
            continue
        chosen.append(candidate)
        candidate += 1
    return tuple(chosen)


def check_node_ports(
    ports: Sequence[int],
    count: int,
    used: Iterable[int] = (),
    port_range: NodePortRange = DEFAULT_RANGE,
) -> tuple[int, ...]:
    """Check ports a user asked for by number: right count, distinct, in range, free."""
    if len(ports) != count:
        raise NodePortUnavailableError(
            f"the deployment exposes {count} port(s) but {len(ports)} NodePort(s) were given"
        )
    if len(set(ports)) != len(ports):
        raise NodePortUnavailableError(f"NodePorts {list(ports)} repeat a port")
    outside = [p for p in ports if p not in port_range]
    if outside:
        raise NodePortUnavailableError(
            f"NodePort(s) {outside} outside the node port range {port_range}"
        )
    clash = sorted(set(ports) & set(used))
    if clash:
        raise NodePortUnavailableError(f"NodePort(s) {clash} already in use")
    return tuple(ports)


#: Inside a transaction: given the used ports, return the ports to record.
Chooser = Callable[[frozenset[int]], Sequence[int]]


class NodePortStore(Protocol):
    """Where reservations live: ``owner`` (a deployment's key) to its ports.

    ``reserve`` must run read, choose and record as one atomic step: two
    concurrent calls never record the same port. A database store does this
    in one transaction (``SELECT ... FOR UPDATE`` on the records, or
    serializable isolation, plus a unique index on the port).
    """

    def reserve(self, owner: str, choose: Chooser) -> tuple[int, ...]:
        """Record ``choose(used)`` for ``owner`` atomically; return it.

        When ``owner`` already holds ports, return them unchanged without
        calling ``choose`` (a retried deploy keeps its ports).
        """
        ...

    def release(self, owner: str) -> tuple[int, ...]:
        """Forget ``owner``'s ports; return what it held (empty if nothing)."""
        ...

    def reserved(self) -> dict[str, tuple[int, ...]]:
        """Every reservation, for status pages and audits."""
        ...


class InMemoryNodePortStore:
    """A :class:`NodePortStore` for one process (``deploy export``, tests, the local backend)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_owner: dict[str, tuple[int, ...]] = {}

    def reserve(self, owner: str, choose: Chooser) -> tuple[int, ...]:
        with self._lock:
            held = self._by_owner.get(owner)
            if held is not None:
                return held
            used = frozenset(p for ports in self._by_owner.values() for p in ports)
            chosen = tuple(choose(used))
            clash = sorted(used.intersection(chosen))
            if clash or len(set(chosen)) != len(chosen):
                # The chooser ignored what it was shown; refuse rather than double-book.
                raise NodePortUnavailableError(
                    f"NodePort(s) {clash or list(chosen)} already in use"
                )
            self._by_owner[owner] = chosen
            return chosen

    def release(self, owner: str) -> tuple[int, ...]:
        with self._lock:
            return self._by_owner.pop(owner, ())

    def reserved(self) -> dict[str, tuple[int, ...]]:
        with self._lock:
            return dict(self._by_owner)


class NodePortAllocator:
    """Recommends and reserves NodePorts for deployments.

    ``cluster_used`` reports ports the platform did not hand out (other
    Services in the cluster, read by the kubernetes backend); they are
    avoided exactly like recorded ones.
    """

    def __init__(
        self,
        store: NodePortStore,
        port_range: NodePortRange = DEFAULT_RANGE,
        cluster_used: Callable[[], Iterable[int]] = lambda: (),
    ) -> None:
        self.store = store
        self.port_range = port_range
        self._cluster_used = cluster_used

    def allocate(
        self, owner: str, count: int, *, requested: Sequence[int] | None = None
    ) -> tuple[int, ...]:
        """Reserve ``count`` ports for ``owner`` (the ``requested`` ones when given)."""
        external = frozenset(self._cluster_used())

        def choose(recorded: frozenset[int]) -> Sequence[int]:
            used = recorded | external
            if requested is not None:
                return check_node_ports(requested, count, used, self.port_range)
            return recommend_node_ports(count, used, self.port_range)

        ports = self.store.reserve(owner, choose)
        if len(ports) != count or (requested is not None and set(ports) != set(requested)):
            raise NodePortReservationError(
                f"{owner!r} already holds NodePorts {list(ports)}; delete it before "
                f"asking for {list(requested) if requested is not None else count}"
            )
        return ports

    def release(self, owner: str) -> tuple[int, ...]:
        return self.store.release(owner)


__all__ = [
    "DEFAULT_END",
    "DEFAULT_RANGE",
    "DEFAULT_START",
    "Chooser",
    "InMemoryNodePortStore",
    "NodePortAllocator",
    "NodePortRange",
    "NodePortStore",
    "check_node_ports",
    "recommend_node_ports",
]
