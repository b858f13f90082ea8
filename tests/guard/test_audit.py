"""The audit log: chain round trip, every kind of tampering, torn tails, anchors, keys."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelseal.errors import FormatError, IntegrityError
from modelseal.guard.audit import (
    MAX_LINE_SIZE,
    TAIL_REPAIRED_EVENT,
    AuditFormatError,
    AuditLog,
    AuditTamperedError,
    AuditTruncatedError,
    Head,
    ReasonCode,
    canonical_json,
    derive_audit_mac_key,
    genesis_hash,
    iter_records,
    record_hash,
    verify,
)

KEY = bytes(range(32))
T0 = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)


def ticking_clock(
    start: datetime = T0, step: timedelta = timedelta(seconds=1)
) -> Callable[[], datetime]:
    times: Iterator[datetime] = (start + i * step for i in range(10**9))
    return lambda: next(times)


def make_log(path: Path, n: int, *, mac_key: bytes | None = None) -> list[dict[str, Any]]:
    log = AuditLog(path, mac_key=mac_key, clock=ticking_clock())
    reasons = [None, ReasonCode.EXPIRED, ReasonCode.CLOCK_ROLLBACK, "custom_reason"]
    return [
        log.append(f"event_{i}", reason=reasons[i % len(reasons)], data={"i": i, "name": "é✓"})
        for i in range(n)
    ]


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rehash(
    line: bytes, mutate: Callable[[dict[str, Any]], None], mac_key: bytes | None = None
) -> bytes:
    record = json.loads(line)
    mutate(record)
    record["hash"] = record_hash(record, mac_key)
    return canonical_json(record) + b"\n"


# --- round trip --------------------------------------------------------------


def test_append_verify_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    written = make_log(path, 6)
    report = verify(path)
    assert report.ok and not report.tampered and not report.torn_tail
    assert report.records == 6 and report.head == Head(5, written[-1]["hash"])
    assert AuditLog(path).head() == report.head
    assert list(iter_records(path)) == written
    assert written[0]["prev"] == genesis_hash(None)
    assert [r["prev"] for r in written[1:]] == [r["hash"] for r in written[:-1]]
    assert written[1]["reason"] == "expired" and written[0]["reason"] is None
    assert written[0]["ts"] == "2026-11-23T20:00:00.000Z"
    # each line is the canonical JSON of its record, so independent verifiers can rely on it
    for line, record in zip(lines_of(path), written, strict=True):
        assert line == canonical_json(record) + b"\n"
    report.raise_for_problem()
    assert report.to_json()["ok"] is True


def test_empty_and_missing_logs(tmp_path: Path) -> None:
    assert AuditLog(tmp_path / "none.log").head() is None
    (tmp_path / "empty.log").write_bytes(b"")
    report = verify(tmp_path / "empty.log")
    assert report.ok and report.records == 0 and report.head is None
    with pytest.raises(FileNotFoundError):
        verify(tmp_path / "none.log")


def test_append_rejects_bad_input(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.log", clock=lambda: datetime(2026, 1, 1))  # naive
    with pytest.raises(ValueError, match="timezone"):
        log.append("x")
    log = AuditLog(tmp_path / "a.log", clock=ticking_clock())
    with pytest.raises(ValueError, match="non-empty"):
        log.append("")
    with pytest.raises(ValueError, match="plain JSON"):
        log.append("x", data={"v": float("nan")})
    with pytest.raises(ValueError, match="plain JSON"):
        log.append("x", data={"v": object()})
    with pytest.raises(ValueError, match="longer"):
        log.append("x", data={"v": "a" * MAX_LINE_SIZE})
    with pytest.raises(ValueError, match="16 bytes"):
        AuditLog(tmp_path / "a.log", mac_key=b"short")
    assert not (tmp_path / "a.log").exists() or verify(tmp_path / "a.log").records == 0


def test_timestamps_are_utc(tmp_path: Path) -> None:
    from datetime import timezone

    east = timezone(timedelta(hours=8))
    log = AuditLog(tmp_path / "a.log", clock=lambda: datetime(2026, 1, 1, 8, 0, 0, 123456, east))
    assert log.append("x")["ts"] == "2026-01-01T00:00:00.123Z"


def _append_many(path: str, worker: int, n: int) -> None:
    log = AuditLog(path, mac_key=KEY)
    for i in range(n):
        log.append("call", data={"worker": worker, "i": i})


def test_two_processes_append_safely(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 40)) for w in range(2)]
    for p in procs:
        p.start()
    _append_many(str(path), 2, 40)  # and this process at the same time
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    report = verify(path, mac_key=KEY)
    assert report.ok, report.problem
    assert report.records == 120
    records = list(iter_records(path))
    for worker in range(3):
        mine = [r["data"]["i"] for r in records if r["data"]["worker"] == worker]
        assert mine == list(range(40))  # each writer's records in its own order, none lost


# --- tampering ---------------------------------------------------------------

N = 6


@pytest.mark.parametrize("i", range(N))
def test_edit_without_rehash_is_caught_at_that_line(tmp_path: Path, i: int) -> None:
    path = tmp_path / "a.log"
    make_log(path, N)
    lines = lines_of(path)
    lines[i] = lines[i].replace(b'"event":"event_', b'"event":"EVENT_')
    path.write_bytes(b"".join(lines))
    report = verify(path)
    assert report.problem is not None and report.tampered
    assert (report.problem.line, report.problem.kind) == (i + 1, "hash")
    assert report.records == i
    with pytest.raises(AuditTamperedError) as exc:
        report.raise_for_problem()
    assert exc.value.line == i + 1 and isinstance(exc.value, IntegrityError)


@pytest.mark.parametrize("i", range(N))
def test_edit_with_rehash_is_caught_at_the_next_line_or_by_the_anchor(
    tmp_path: Path, i: int
) -> None:
    path = tmp_path / "a.log"
    written = make_log(path, N)
    anchor = (written[-1]["seq"], written[-1]["hash"])
    lines = lines_of(path)
    lines[i] = rehash(lines[i], lambda r: r.update(reason="forged"))
    path.write_bytes(b"".join(lines))
    report = verify(path)
    if i < N - 1:
        assert report.problem is not None
        assert (report.problem.line, report.problem.kind) == (i + 2, "prev")
    else:
        assert report.ok  # an unkeyed chain's last link can be rewritten: hence the anchor
    anchored = verify(path, expected_head=anchor)
    assert anchored.problem is not None and anchored.tampered


@pytest.mark.parametrize("i", range(N))
def test_deletion_is_caught(tmp_path: Path, i: int) -> None:
    path = tmp_path / "a.log"
    written = make_log(path, N)
    lines = lines_of(path)
    del lines[i]
    path.write_bytes(b"".join(lines))
    report = verify(path)
    if i < N - 1:
        assert report.problem is not None
        assert (report.problem.line, report.problem.kind) == (i + 1, "seq")
    else:
        assert report.ok and report.records == N - 1
    anchored = verify(path, expected_head=(written[-1]["seq"], written[-1]["hash"]))
    assert anchored.problem is not None and anchored.tampered


@pytest.mark.parametrize("i", range(N - 1))
def test_swap_of_neighbours_is_caught(tmp_path: Path, i: int) -> None:
    path = tmp_path / "a.log"
    make_log(path, N)
    lines = lines_of(path)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    path.write_bytes(b"".join(lines))
    report = verify(path)
    assert report.problem is not None
    assert (report.problem.line, report.problem.kind) == (i + 1, "seq")


@pytest.mark.parametrize("i", range(N))
def test_insertion_is_caught(tmp_path: Path, i: int) -> None:
    path = tmp_path / "a.log"
    make_log(path, N)
    lines = lines_of(path)
    lines.insert(i + 1, lines[i])  # a replayed copy
    path.write_bytes(b"".join(lines))
    report = verify(path)
    assert report.problem is not None
    assert (report.problem.line, report.problem.kind) == (i + 2, "seq")


def test_forged_record_with_renumbering_is_caught_by_prev(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    make_log(path, 4)
    lines = lines_of(path)
    # the attacker replaces record 2 with a forged one that chains from record 1
    # but cannot make record 3's prev point at it without rewriting record 3 too
    forged = rehash(lines[2], lambda r: r.update(event="forged"))
    path.write_bytes(b"".join([lines[0], lines[1], forged, lines[3]]))
    report = verify(path)
    assert report.problem is not None and (report.problem.line, report.problem.kind) == (4, "prev")


def test_full_rewrite_of_unkeyed_chain_needs_the_anchor(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    written = make_log(path, 5)
    anchor = (written[-1]["seq"], written[-1]["hash"])
    records = [json.loads(line) for line in lines_of(path)]
    records[1]["event"] = "forged"
    prev = genesis_hash(None)
    out = b""
    for r in records:
        r["prev"] = prev
        r["hash"] = record_hash(r)
        prev = r["hash"]
        out += canonical_json(r) + b"\n"
    path.write_bytes(out)
    assert verify(path).ok  # anyone can recompute SHA-256...
    report = verify(path, expected_head=anchor)  # ...but not the hash the state remembers
    assert report.problem is not None and report.problem.kind == "head_mismatch"
    assert report.problem.line == 5


def test_keyed_chain_cannot_be_rewritten_without_the_key(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    make_log(path, 5, mac_key=KEY)
    assert verify(path, mac_key=KEY).ok
    lines = lines_of(path)
    lines[2] = rehash(lines[2], lambda r: r.update(event="forged"))  # plain SHA-256
    path.write_bytes(b"".join(lines))
    report = verify(path, mac_key=KEY)
    assert report.problem is not None and (report.problem.line, report.problem.kind) == (3, "hash")
    assert "plain SHA-256" in report.problem.message


def test_keyed_vs_unkeyed(tmp_path: Path) -> None:
    keyed, plain = tmp_path / "k.log", tmp_path / "p.log"
    make_log(keyed, 3, mac_key=KEY)
    make_log(plain, 3)
    assert verify(keyed, mac_key=KEY).ok and verify(keyed, mac_key=KEY).keyed
    assert verify(plain).ok and not verify(plain).keyed
    # a keyed log checked without its key, or with another key, fails at its first line
    no_key = verify(keyed)
    assert no_key.problem is not None and no_key.problem.line == 1
    assert "verify it with its key" in no_key.problem.message
    wrong = verify(keyed, mac_key=bytes(32))
    assert wrong.problem is not None and wrong.problem.line == 1
    assert "another key" in wrong.problem.message
    # an unkeyed log is never accepted where a keyed one is expected
    passed_off = verify(plain, mac_key=KEY)
    assert passed_off.problem is not None and passed_off.problem.line == 1
    assert "not keyed" in passed_off.problem.message
    assert genesis_hash(KEY) != genesis_hash(None)


def test_append_refuses_to_extend_a_broken_or_foreign_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    make_log(path, 3, mac_key=KEY)
    with pytest.raises(AuditTamperedError, match="another key"):
        AuditLog(path, mac_key=bytes(32)).append("x")
    lines = lines_of(path)
    lines[-1] = lines[-1].replace(b"event_2", b"event_X")
    path.write_bytes(b"".join(lines))
    with pytest.raises(AuditTamperedError):
        AuditLog(path, mac_key=KEY).append("x")
    assert len(lines_of(path)) == 3  # nothing appended


def test_derived_keys_are_separated() -> None:
    k1 = derive_audit_mac_key(KEY, context=b"lic-1")
    assert k1 == derive_audit_mac_key(KEY, context=b"lic-1") and len(k1) == 32
    assert k1 != derive_audit_mac_key(KEY, context=b"lic-2")
    assert k1 != derive_audit_mac_key(bytes(32), context=b"lic-1")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), keyed=st.booleans())
def test_any_single_byte_change_is_caught_with_the_anchor(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, keyed: bool
) -> None:
    path = tmp_path_factory.mktemp("flip") / "a.log"
    key = KEY if keyed else None
    written = make_log(path, 4, mac_key=key)
    anchor = (written[-1]["seq"], written[-1]["hash"])
    blob = bytearray(path.read_bytes())
    pos = data.draw(st.integers(0, len(blob) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != blob[pos]))
    blob[pos] = new
    path.write_bytes(bytes(blob))
    report = verify(path, mac_key=key, expected_head=anchor)
    assert not report.ok


# --- malformed lines -----------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json",
        b"[1,2]",
        b"",
        b'{"seq":1}',
        b"\xff\xfe",
        b'{"seq":1,"seq":1,"ts":"x","event":"e","reason":null,"data":{},"prev":"p","hash":"h"}',
    ],
)
def test_malformed_line_in_the_middle(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "a.log"
    make_log(path, 3)
    lines = lines_of(path)
    lines.insert(1, garbage + b"\n")
    path.write_bytes(b"".join(lines))
    report = verify(path)
    assert report.problem is not None and report.problem.kind == "malformed"
    assert report.problem.line == 2 and not report.tampered
    with pytest.raises(AuditFormatError) as exc:
        report.raise_for_problem()
    assert isinstance(exc.value, FormatError) and exc.value.exit_code == 3
    with pytest.raises(AuditFormatError):
        list(iter_records(path))


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("seq", -1),
        ("seq", True),
        ("seq", "0"),
        ("ts", "2026-11-23 20:00:00Z"),
        ("ts", "2026-13-23T20:00:00Z"),
        ("ts", "2026-11-23T20:00:00+00:00"),
        ("event", ""),
        ("reason", 5),
        ("data", []),
        ("prev", "short"),
        ("hash", None),
    ],
)
def test_record_shape_is_checked(tmp_path: Path, member: str, value: Any) -> None:
    path = tmp_path / "a.log"
    make_log(path, 1)
    record = json.loads(path.read_bytes())
    record[member] = value
    path.write_bytes(json.dumps(record).encode() + b"\n")
    report = verify(path)
    assert report.problem is not None and report.problem.kind == "malformed"


def test_over_long_line_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    make_log(path, 1)
    with path.open("ab") as f:
        f.write(b"x" * (MAX_LINE_SIZE + 10) + b"\n")
    report = verify(path)
    assert report.problem is not None and report.problem.kind == "malformed"
    assert report.problem.line == 2


# --- torn tail and the anchor ----------------------------------------------------


@pytest.mark.parametrize("tail", [b'{"seq":3,"ts":"2026-', b"\x00" * 40, b"x"])
def test_torn_last_line_is_not_tampering(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "a.log"
    written = make_log(path, 3, mac_key=KEY)
    anchor = (written[-1]["seq"], written[-1]["hash"])
    with path.open("ab") as f:
        f.write(tail)
    report = verify(path, mac_key=KEY, expected_head=anchor)
    assert report.ok and report.torn_tail and report.torn_tail_bytes == len(tail)
    assert report.records == 3 and report.to_json()["torn_tail_bytes"] == len(tail)
    assert list(iter_records(path)) == written
    assert AuditLog(path, mac_key=KEY).head() == Head(*anchor)

    # the next append cuts the torn line off and says so in the chain
    log = AuditLog(path, mac_key=KEY, clock=ticking_clock(T0 + timedelta(hours=1)))
    record = log.append("after_crash")
    records = list(iter_records(path))
    assert [r["event"] for r in records[-2:]] == [TAIL_REPAIRED_EVENT, "after_crash"]
    assert records[-2]["data"] == {"dropped_bytes": len(tail)}
    assert record["seq"] == 4
    report = verify(path, mac_key=KEY, expected_head=anchor)
    assert report.ok and not report.torn_tail and report.records == 5


def test_expected_head_detects_truncation(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    written = make_log(path, 5)
    log = AuditLog(path)
    head = log.head()
    assert head == Head(4, written[-1]["hash"])
    assert verify(path, expected_head=head).ok
    lines = lines_of(path)
    path.write_bytes(b"".join(lines[:3]))  # a valid, shorter chain
    assert verify(path).ok
    report = verify(path, expected_head=head)
    assert report.problem is not None and report.problem.kind == "truncated"
    assert report.problem.line == 4 and "ends at seq 2" in report.problem.message
    with pytest.raises(AuditTruncatedError) as exc:
        report.raise_for_problem()
    assert exc.value.exit_code == 4
    # cut in the middle of the last line: looks like a crash, the anchor still sees it
    path.write_bytes(b"".join(lines[:4]) + lines[4][:20])
    torn = verify(path, expected_head=head)
    assert torn.torn_tail and torn.problem is not None and torn.problem.kind == "truncated"
    # everything removed
    path.write_bytes(b"")
    empty = verify(path, expected_head=head)
    assert empty.problem is not None and "is empty" in empty.problem.message


def test_log_may_run_ahead_of_the_anchor(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    written = make_log(path, 5)
    # the guard crashed after appending records 3 and 4 but before saving its state
    report = verify(path, expected_head=(2, written[2]["hash"]))
    assert report.ok and report.records == 5
    wrong = verify(path, expected_head=(2, written[3]["hash"]))
    assert wrong.problem is not None and wrong.problem.kind == "head_mismatch"
    assert wrong.problem.line == 3


# --- anchored appends (issue #8: the guard never extends a chain it did not anchor) ----


def test_append_after_the_anchor_or_one_past_it_only(tmp_path: Path) -> None:
    from modelseal.guard.audit import AuditLog, AuditTamperedError, Head

    log = AuditLog(tmp_path / "a.jsonl")
    first = log.append("a", after=None)  # an empty log: nothing anchored yet
    a0 = Head(first["seq"], first["hash"])
    second = log.append("b", after=a0)
    a1 = Head(second["seq"], second["hash"])
    log.append("c", after=a0)  # one record past the anchor: the crash window
    with pytest.raises(AuditTamperedError) as info:
        log.append("d", after=a0)  # two past: the state is older than the log
    assert info.value.kind == "head_mismatch"
    with pytest.raises(AuditTamperedError):
        log.append("d", after=None)  # a log where none was anchored
    with pytest.raises(AuditTamperedError):
        log.append("d", after=Head(a1.seq, a0.hash))  # right seq, another hash
    log.expect_head(a1)
    with pytest.raises(AuditTamperedError):
        log.expect_head(a0)
    with pytest.raises(AuditTamperedError):
        AuditLog(tmp_path / "missing.jsonl").expect_head(a0)
    AuditLog(tmp_path / "missing.jsonl").expect_head(None)


def test_rollback_removes_only_the_last_record_it_names(tmp_path: Path) -> None:
    from modelseal.guard.audit import AuditLog

    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    r0 = log.append("a")
    r1 = log.append("b")
    assert not log.rollback(r0)  # not the last line: left alone
    assert log.rollback(r1)
    assert [r["event"] for r in iter_records(path)] == ["a"]
    assert not log.rollback(r1)  # already gone
    assert verify(path).ok
    assert not AuditLog(tmp_path / "none.jsonl").rollback(r0)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(st.sampled_from(["ok", "state_fails", "crash"]), min_size=1, max_size=12))
def test_failed_anchors_never_leave_the_log_more_than_one_ahead(
    tmp_path_factory: pytest.TempPathFactory, steps: list[str]
) -> None:
    """The guard's protocol over any mix of successes, failed state writes and
    crashes: the anchor always verifies, at most one record past it."""
    from modelseal.guard.audit import AuditLog, AuditTamperedError, Head

    path = tmp_path_factory.mktemp("log") / "a.jsonl"
    log = AuditLog(path)
    anchor: Head | None = None
    crashed = False
    for step in steps:
        if step == "crash" and crashed:
            # a second crash between an append and its state write before any
            # anchor succeeded would leave two records: out of this model
            step = "ok"
        crashed = (crashed or step == "crash") and step != "ok"
        try:
            record = log.append(step, after=anchor)
        except AuditTamperedError:
            pytest.fail("a log the protocol wrote was refused")
        if step == "ok":
            anchor = Head(record["seq"], record["hash"])
        elif step == "state_fails":
            assert log.rollback(record)
        # "crash": the record stays, unanchored; the next append chains onto it
        # and anchors both
        report = verify(path, expected_head=anchor)
        assert report.ok
        head = report.head
        assert head is not None or anchor is None
        if head is not None:
            assert head.seq <= (anchor.seq if anchor else -1) + 1
