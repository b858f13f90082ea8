"""Clock policy as properties over arbitrary time sequences; nothing sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.errors import FormatError
from modelseal.guard.audit import ReasonCode
from modelseal.guard.clock import (
    ClockState,
    Verdict,
    heartbeat_ok,
    observe,
    offline_grace_ok,
    trusted_now,
)

times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=60))
states = st.builds(ClockState, high_water=times, last_heartbeat_ok=st.none() | times)
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@given(state=states, now=times, tolerance=durations)
def test_observe_single_step(state: ClockState, now: datetime, tolerance: timedelta) -> None:
    new, verdict = observe(state, now, tolerance=tolerance)
    assert new.high_water >= state.high_water  # never moves backwards
    assert new.last_heartbeat_ok == state.last_heartbeat_ok
    if now < state.high_water - tolerance:
        assert verdict is Verdict.CLOCK_ROLLBACK and new == state
    else:
        assert verdict is Verdict.OK
        assert new.high_water == max(state.high_water, now)
    assert observe(new, now, tolerance=tolerance)[1] is verdict or verdict is Verdict.OK


@given(start=times, readings=st.lists(times, max_size=30), tolerance=durations)
def test_rollback_never_accumulates(
    start: datetime, readings: list[datetime], tolerance: timedelta
) -> None:
    state = ClockState.start(start)
    newest = start
    for now in readings:
        state, verdict = observe(state, now, tolerance=tolerance)
        if verdict is Verdict.OK:
            # every accepted reading is within tolerance of the newest time ever accepted,
            # however many small steps back came before it
            assert now >= newest - tolerance
            newest = max(newest, now)
        else:
            assert now < newest - tolerance
        assert state.high_water == newest


@given(
    start=times,
    steps=st.lists(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)), max_size=30),
)
def test_forward_time_never_rolls_back(start: datetime, steps: list[timedelta]) -> None:
    state, now = ClockState.start(start), start
    for step in steps:
        now += step
        state, verdict = observe(state, now, tolerance=timedelta(0))
        assert verdict is Verdict.OK and state.high_water == now


@given(half=st.integers(1, 1800))
def test_small_steps_back_hit_the_floor(half: int) -> None:
    tolerance = timedelta(seconds=2 * half)  # even, so two half-steps are exactly the tolerance
    state = ClockState.start(T0)
    now = T0
    verdicts = []
    for _ in range(10):
        now -= tolerance / 2
        state, verdict = observe(state, now, tolerance=tolerance)
        verdicts.append(verdict)
    assert verdicts[:2] == [Verdict.OK, Verdict.OK]
    assert all(v is Verdict.CLOCK_ROLLBACK for v in verdicts[2:])
    assert state.high_water == T0


@given(state=states, now=times, grace=durations)
def test_offline_grace_definition(state: ClockState, now: datetime, grace: timedelta) -> None:
    ok = offline_grace_ok(state, now, grace)
    if state.last_heartbeat_ok is None:
        assert not ok
    else:
        assert ok == (max(now, state.high_water) - state.last_heartbeat_ok <= grace)
    assert offline_grace_ok(state, now, None)  # no heartbeat required


@given(state=states, a=times, b=times, grace=durations)
def test_setting_the_clock_back_never_buys_grace(
    state: ClockState, a: datetime, b: datetime, grace: timedelta
) -> None:
    early, late = min(a, b), max(a, b)
    if offline_grace_ok(state, early, grace):
        assert offline_grace_ok(state, early - timedelta(days=1), grace)
    # later never turns a "no" into a "yes"
    if not offline_grace_ok(state, early, grace):
        assert not offline_grace_ok(state, late, grace)
    # a "no" at the high-water mark is a "no" at any earlier wall time
    if not offline_grace_ok(state, state.high_water, grace):
        assert not offline_grace_ok(state, early, grace)


@given(state=states, at=times, grace=durations)
def test_heartbeat(state: ClockState, at: datetime, grace: timedelta) -> None:
    new = heartbeat_ok(state, at)
    assert new.last_heartbeat_ok is not None and new.last_heartbeat_ok >= at
    if state.last_heartbeat_ok is not None:
        assert new.last_heartbeat_ok >= state.last_heartbeat_ok
    assert new.high_water == max(state.high_water, at)
    if new.last_heartbeat_ok == new.high_water:
        assert offline_grace_ok(new, at, grace)  # right after a heartbeat we are within grace


def test_grace_example() -> None:
    state = heartbeat_ok(ClockState.start(T0), T0)
    day = timedelta(days=1)
    state, _ = observe(state, T0 + 2 * day, tolerance=timedelta(minutes=5))
    assert offline_grace_ok(state, T0 + 2 * day, 3 * day)
    assert not offline_grace_ok(state, T0 + 4 * day, 3 * day)
    # the clock set back to just after the heartbeat: the high-water mark still counts
    assert not offline_grace_ok(state, T0 + timedelta(hours=1), timedelta(days=1))
    assert trusted_now(state, T0) == T0 + 2 * day


@settings(max_examples=200)
@given(state=states)
def test_json_round_trip(state: ClockState) -> None:
    back = ClockState.from_json(state.to_json())
    assert abs(back.high_water - state.high_water) <= timedelta(microseconds=1)
    if state.last_heartbeat_ok is None:
        assert back.last_heartbeat_ok is None
    else:
        assert back.last_heartbeat_ok is not None
        assert abs(back.last_heartbeat_ok - state.last_heartbeat_ok) <= timedelta(microseconds=1)


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"high_water": "x", "last_heartbeat_ok": None},
        {"high_water": True, "last_heartbeat_ok": None},
        None,
    ],
)
def test_json_rejects_garbage(obj: object) -> None:
    with pytest.raises(FormatError):
        ClockState.from_json(obj)


def test_naive_and_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        ClockState(high_water=datetime(2026, 1, 1))
    state = ClockState.start(T0)
    with pytest.raises(ValueError, match="timezone"):
        observe(state, datetime(2026, 1, 1), tolerance=timedelta(0))
    with pytest.raises(ValueError, match="negative"):
        observe(state, T0, tolerance=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="negative"):
        offline_grace_ok(state, T0, timedelta(seconds=-1))


def test_other_timezones_are_normalised() -> None:
    east = timezone(timedelta(hours=8))
    state = ClockState.start(datetime(2026, 11, 23, 20, 0, tzinfo=east))
    assert state.high_water == T0 and state.high_water.tzinfo is UTC


def test_verdict_matches_the_audit_reason() -> None:
    assert Verdict.CLOCK_ROLLBACK.value == ReasonCode.CLOCK_ROLLBACK.value
