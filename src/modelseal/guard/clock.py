"""Clock policy of the guard: pure functions over times the caller passes in.

Why pure: a license's dates mean nothing if the device's clock can be set
back, and the rules that catch that (a high-water mark that never moves
backwards, a grace period counted from the last heartbeat the control plane
answered) are easy to get subtly wrong. Kept free of ``datetime.now()`` and
of files, they are checked by property tests over arbitrary time sequences
instead of by sleeping. The guard reads the clock, calls these, and persists
the returned :class:`ClockState` in its encrypted state file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from modelseal.errors import FormatError


class Verdict(StrEnum):
    """Outcome of one clock observation. Values match the audit ``ReasonCode``."""

    OK = "ok"
    CLOCK_ROLLBACK = "clock_rollback"


def _aware(name: str, when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return when.astimezone(UTC)


@dataclass(frozen=True)
class ClockState:
    """The newest time the guard has seen, and when a heartbeat last succeeded.

    ``high_water`` only moves forwards; every comparison the guard makes uses
    :func:`trusted_now`, so setting the clock back neither revives an expired
    license nor stretches the offline grace.
    """

    high_water: datetime
    last_heartbeat_ok: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "high_water", _aware("high_water", self.high_water))
        if self.last_heartbeat_ok is not None:
            object.__setattr__(
                self, "last_heartbeat_ok", _aware("last_heartbeat_ok", self.last_heartbeat_ok)
            )

    @classmethod
    def start(cls, now: datetime) -> ClockState:
        """The state of a guard that has seen only ``now`` (first run)."""
        return cls(high_water=now)

    def to_json(self) -> dict[str, Any]:
        """Plain values for the state file (Unix seconds as floats)."""
        return {
            "high_water": self.high_water.timestamp(),
            "last_heartbeat_ok": None
            if self.last_heartbeat_ok is None
            else self.last_heartbeat_ok.timestamp(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> ClockState:
        try:
            hw = obj["high_water"]
            hb = obj["last_heartbeat_ok"]
            if isinstance(hw, bool) or (hb is not None and isinstance(hb, bool)):
                raise TypeError
            return cls(
                high_water=datetime.fromtimestamp(float(hw), UTC),
                last_heartbeat_ok=None if hb is None else datetime.fromtimestamp(float(hb), UTC),
            )
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            raise FormatError("clock state must hold high_water and last_heartbeat_ok") from None


def observe(
    state: ClockState, now: datetime, *, tolerance: timedelta
) -> tuple[ClockState, Verdict]:
    """Fold one clock reading into the state.

    ``now`` earlier than ``high_water - tolerance`` is a rollback: the state is
    returned unchanged (the mark is not lowered, so stepping back a little at a
    time never accumulates). Within the tolerance (NTP slews, VM migrations)
    the reading is accepted without lowering the mark; later readings raise it.
    """
    now = _aware("now", now)
    if tolerance < timedelta(0):
        raise ValueError("tolerance must not be negative")
    if now < state.high_water - tolerance:
        return state, Verdict.CLOCK_ROLLBACK
    if now > state.high_water:
        return ClockState(now, state.last_heartbeat_ok), Verdict.OK
    return state, Verdict.OK


def trusted_now(state: ClockState, now: datetime) -> datetime:
    """The latest of the wall clock and the high-water mark: the time to check dates against."""
    return max(_aware("now", now), state.high_water)


def heartbeat_ok(state: ClockState, at: datetime) -> ClockState:
    """Record a heartbeat the control plane answered at ``at`` (also raises the mark)."""
    at = _aware("at", at)
    last = at if state.last_heartbeat_ok is None else max(state.last_heartbeat_ok, at)
    return ClockState(max(state.high_water, at), last)


def offline_grace_ok(state: ClockState, now: datetime, grace: timedelta | None) -> bool:
    """May the guard keep running without a fresh heartbeat?

    ``grace=None`` means the license needs no heartbeat. Otherwise the grace
    runs from the last successful heartbeat to :func:`trusted_now` (so a clock
    set back does not buy time); a guard that has never had a heartbeat is not
    within grace: the guard records activation as its first heartbeat.
    """
    if grace is None:
        return True
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    if state.last_heartbeat_ok is None:
        return False
    return trusted_now(state, now) - state.last_heartbeat_ok <= grace


__all__ = [
    "ClockState",
    "Verdict",
    "heartbeat_ok",
    "observe",
    "offline_grace_ok",
    "trusted_now",
]
