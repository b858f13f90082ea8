"""Rules of the audit log at its edges (docs/guard-audit-unlock.md, section 1):

* canonical JSON is sorted keys, no whitespace, non-ASCII as itself, no NaN
  (the spec's own example lines verify, byte for byte);
* ``ts`` is UTC with milliseconds, whatever the caller's or the machine's
  time zone;
* a record of exactly ``MAX_LINE_SIZE`` bytes is a record, one byte more is
  refused by the writer and malformed for the reader; a hostile over-long
  line is read in bounded memory;
* the tail reader finds the last line however long the log and wherever the
  line falls across its read blocks (an append stays O(record));
* appending after an anchor needs the same ``seq`` *and* hash (a rewritten
  last record of the same length is refused), also for a keyed log's first
  record and for a deleted log;
* every error and problem names its 1-based line and says what is wrong.

Found by mutation testing (tests/MUTATION.md, guard/audit.py): each of these
could be changed without a failing test.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from modelseal.guard.audit import (
    MAX_LINE_SIZE,
    AuditFormatError,
    AuditLog,
    AuditTamperedError,
    Head,
    canonical_json,
    derive_audit_mac_key,
    format_ts,
    iter_records,
    parse_record,
    record_hash,
    verify,
)
from tests.guard.test_audit import KEY, lines_of, make_log, rehash, ticking_clock

#: The example of docs/guard-audit-unlock.md ("Example (unkeyed ...)"), verbatim.
SPEC_EXAMPLE = (
    b'{"data":{"customer":"ACME","license":"lic-0001"},"event":"verified",'
    b'"hash":"qdvABqRgRyFufPZ5MZgBgjtTtKN_4aht0KmqK23CMM4",'
    b'"prev":"-xzJqVDqvtSUk8VxvPdFqpcQr8d1DA2DaEOTqy1aKB0","reason":null,"seq":0,'
    b'"ts":"2026-11-23T20:20:24.123Z"}\n'
    b'{"data":{"detail":"the license has expired"},"event":"refused",'
    b'"hash":"JAks65lO8W829QrECo-NV-nYqJsW1aWf42d30skVc8w",'
    b'"prev":"qdvABqRgRyFufPZ5MZgBgjtTtKN_4aht0KmqK23CMM4","reason":"expired","seq":1,'
    b'"ts":"2026-11-23T20:20:24.123Z"}\n'
)


# --- canonical JSON -------------------------------------------------------------------


def test_canonical_json_is_sorted_compact_utf8_and_refuses_nan() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, "é✓"], "c": None}}) == (
        '{"a":{"c":null,"d":[1,"é✓"]},"b":1}'.encode()
    )
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="not JSON compliant"):
            canonical_json({"x": bad})


def test_the_spec_example_verifies_and_the_writer_writes_it_byte_for_byte(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spec.log"
    path.write_bytes(SPEC_EXAMPLE)
    assert verify(path).ok
    at = datetime(2026, 11, 23, 20, 20, 24, 123456, tzinfo=UTC)
    log = AuditLog(tmp_path / "written.log", clock=lambda: at)
    log.append("verified", data={"license": "lic-0001", "customer": "ACME"})
    log.append("refused", reason="expired", data={"detail": "the license has expired"})
    assert (tmp_path / "written.log").read_bytes() == SPEC_EXAMPLE


def test_a_non_ascii_record_is_hashed_over_its_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    AuditLog(path, clock=ticking_clock()).append("refused", data={"detail": "é✓"})
    line = lines_of(path)[0]
    assert "é✓".encode() in line  # written as itself, not \\u escapes
    assert verify(path).ok
    # a verifier that escapes non-ASCII computes another hash: the spec's form is the one
    record = json.loads(line)
    escaped = json.dumps(
        {k: v for k, v in record.items() if k != "hash"},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode()
    import base64
    import hashlib

    digest = base64.urlsafe_b64encode(hashlib.sha256(escaped).digest()).rstrip(b"=").decode()
    assert digest != record["hash"] == record_hash(record)


# --- timestamps -----------------------------------------------------------------------


@pytest.fixture
def tokyo_local_time() -> Iterator[None]:
    """The process's local time zone set to UTC+9 (``TZ``), restored afterwards."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_ts_is_utc_with_milliseconds_whatever_the_time_zone(tokyo_local_time: None) -> None:
    east = timezone(timedelta(hours=2))
    assert format_ts(datetime(2026, 11, 23, 22, 20, 24, 500000, tzinfo=east)) == (
        "2026-11-23T20:20:24.500Z"
    )
    assert format_ts(datetime(2026, 11, 23, 20, 20, 24, 999999, tzinfo=UTC)) == (
        "2026-11-23T20:20:24.999Z"
    )
    assert format_ts(datetime(2026, 11, 23, 20, 20, 24, 1000, tzinfo=UTC)).endswith(".001Z")


def test_the_mac_key_context_defaults_to_empty() -> None:
    secret = bytes(range(32))
    assert derive_audit_mac_key(secret) == derive_audit_mac_key(secret, context=b"")


# --- sizes ----------------------------------------------------------------------------


def _padded(size: int) -> dict[str, str]:
    """``data`` that makes the record line (without newline) exactly ``size`` bytes."""
    at = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    line = canonical_json(
        {
            "seq": 0,
            "ts": format_ts(at),
            "event": "e",
            "reason": None,
            "data": {"pad": ""},
            "prev": "A" * 43,
            "hash": "A" * 43,
        }
    )
    return {"pad": "x" * (size - len(line))}


def test_a_record_of_exactly_the_maximum_size_is_a_record(tmp_path: Path) -> None:
    at = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    path = tmp_path / "a.log"
    log = AuditLog(path, clock=lambda: at)
    log.append("e", data=_padded(MAX_LINE_SIZE))
    (line,) = lines_of(path)
    assert len(line) == MAX_LINE_SIZE + 1  # and its newline
    assert verify(path).ok
    assert [r["seq"] for r in iter_records(path)] == [0]
    assert log.head() is not None
    # the writer refuses one byte more, and so does the reader
    with pytest.raises(ValueError, match="longer than"):
        log.append("e", data=_padded(MAX_LINE_SIZE + 1))
    record = json.loads(line)
    record["data"]["pad"] += "x"
    long = canonical_json(record)
    assert len(long) == MAX_LINE_SIZE + 1
    with pytest.raises(AuditFormatError, match="longer than"):
        parse_record(long)


def test_a_torn_tail_of_exactly_the_maximum_size_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    make_log(path, 2)
    with path.open("ab") as f:
        f.write(b"{" * MAX_LINE_SIZE)  # no newline: a write a crash cut short
    report = verify(path)
    assert report.ok and report.records == 2 and report.torn_tail_bytes == MAX_LINE_SIZE


def test_a_hostile_over_long_line_is_read_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    make_log(path, 1)
    with path.open("ab") as f:
        f.write(b"x" * (8 * 1024 * 1024) + b"\n")
    tracemalloc.start()
    try:
        report = verify(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.problem is not None and report.problem.kind == "malformed"
    assert report.problem.line == 2
    assert peak < 1024 * 1024, peak


# --- the tail reader ------------------------------------------------------------------


@pytest.mark.parametrize("pad", [0, 7000, 16000, 20000, 40000])
def test_the_tail_is_found_in_a_log_of_many_large_records(tmp_path: Path, pad: int) -> None:
    """Records of various sizes, so the last line starts before, at and after the
    reader's 16 KiB blocks; over 128 KiB in all (more than the reader may buffer
    for one line, so it must stop at the last line, not read the whole log)."""
    path = tmp_path / "a.log"
    log = AuditLog(path, clock=ticking_clock())
    written = []
    while path.exists() is False or path.stat().st_size < 160 * 1024:
        written.append(log.append("big", data={"pad": "y" * (pad + len(written) * 301)}))
    assert log.head() == Head(written[-1]["seq"], written[-1]["hash"])
    log.expect_head(Head(written[-1]["seq"], written[-1]["hash"]))
    nxt = log.append("next", after=Head(written[-1]["seq"], written[-1]["hash"]))
    assert nxt["seq"] == len(written) and nxt["prev"] == written[-1]["hash"]
    assert verify(path).ok


def test_the_tail_reader_reads_a_log_that_starts_with_an_empty_line(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    make_log(tmp_path / "b.log", 1)
    (record,) = lines_of(tmp_path / "b.log")
    path.write_bytes(b"\n" + record)
    parsed = json.loads(record)
    assert AuditLog(path).head() == Head(0, parsed["hash"])
    assert verify(path).problem is not None  # the empty line is malformed for the verifier


# --- appending after an anchor --------------------------------------------------------


def test_a_rewritten_last_record_of_the_same_seq_is_not_the_anchor(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    written = make_log(path, 3)
    anchor = Head(written[-1]["seq"], written[-1]["hash"])
    lines = lines_of(path)
    lines[-1] = rehash(lines[-1], lambda r: r.update(event="forged"))
    path.write_bytes(b"".join(lines))
    log = AuditLog(path, clock=ticking_clock())
    for attempt in (lambda: log.append("x", after=anchor), lambda: log.expect_head(anchor)):
        with pytest.raises(AuditTamperedError) as info:
            attempt()
        assert info.value.kind == "head_mismatch"
        assert str(info.value) == (
            "the audit log ends at seq 2, not at the head the guard anchored "
            "(seq 2): it was rewritten, cut or replaced"
        )
    assert lines_of(path) == lines


def test_a_keyed_log_takes_its_first_record_after_no_anchor(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = AuditLog(path, mac_key=KEY, clock=ticking_clock())
    path.write_bytes(b"")
    log.expect_head(None)
    first = log.append("first", after=None)
    second = log.append("second", after=Head(first["seq"], first["hash"]))
    assert second["seq"] == 1
    assert verify(path, mac_key=KEY).ok


def test_a_deleted_log_is_reported_as_truncated(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    written = make_log(path, 2)
    path.unlink()
    with pytest.raises(AuditTamperedError) as info:
        AuditLog(path).expect_head(Head(written[-1]["seq"], written[-1]["hash"]))
    assert info.value.kind == "truncated"
    assert str(info.value) == "the audit log was deleted"
    AuditLog(path).expect_head(None)  # nothing anchored yet: nothing to miss


def test_a_log_appends_after_a_fork_reset(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = AuditLog(path, clock=ticking_clock())
    log.append("before")
    log.after_fork()
    log.append("after")
    assert [r["event"] for r in iter_records(path)] == ["before", "after"]


def test_a_tampered_error_without_a_kind_has_an_empty_kind() -> None:
    assert AuditTamperedError("m").kind == ""
    assert AuditTamperedError("m").line is None


# --- errors name their line -----------------------------------------------------------

_FIELD_VALUES = [
    ("seq", -1, "seq must be a non-negative integer"),
    ("ts", "yesterday", "ts must be an RFC 3339 UTC time ending in Z"),
    ("ts", "2026-13-23T20:20:24.123Z", "ts is not a valid time"),
    ("event", "", "event must be a non-empty string"),
    ("reason", 5, "reason must be a string or null"),
    ("data", [], "data must be an object"),
    ("prev", "short", "prev must be 43 base64url characters"),
    ("hash", "short", "hash must be 43 base64url characters"),
]


def _bad_lines() -> list[tuple[bytes, str]]:
    good = json.loads(SPEC_EXAMPLE.splitlines()[0])
    out = [
        (b"x" * (MAX_LINE_SIZE + 1), f"record longer than {MAX_LINE_SIZE} bytes"),
        (b"{not json", "not a JSON record"),
        (b"[1, 2]", "not a JSON object"),
        (
            json.dumps({**good, "extra": 1}).encode(),
            "members must be exactly data, event, hash, prev, reason, seq, ts",
        ),
    ]
    for member, value, message in _FIELD_VALUES:
        out.append((json.dumps({**good, member: value}).encode(), message))
    return out


@pytest.mark.parametrize(("raw", "message"), _bad_lines())
def test_every_shape_error_names_its_line_and_what_is_wrong(
    tmp_path: Path, raw: bytes, message: str
) -> None:
    with pytest.raises(AuditFormatError) as info:
        parse_record(raw, line=3)
    assert str(info.value) == f"line 3: {message}"
    assert info.value.line == 3
    with pytest.raises(AuditFormatError) as info:
        parse_record(raw)
    assert str(info.value) == message  # no "line None"
    assert info.value.line is None
    path = tmp_path / "a.log"
    make_log(path, 2)
    with path.open("ab") as f:
        f.write(raw + b"\n")
    with pytest.raises(AuditFormatError) as info:
        list(iter_records(path))
    assert info.value.line == 3 and str(info.value) == f"line 3: {message}"
    problem = verify(path).problem
    assert problem is not None and (problem.line, problem.kind) == (3, "malformed")
    assert problem.message == f"line 3: {message}"


def test_every_chain_problem_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    written = make_log(path, 4)
    original = lines_of(path)

    def problem_of(lines: list[bytes], **kw: object) -> tuple[int, str, str]:
        path.write_bytes(b"".join(lines))
        p = verify(path, **kw).problem  # type: ignore[arg-type]
        assert p is not None
        return p.line, p.kind, p.message

    # record 2 (line 3) re-hashed: its successor's prev no longer matches
    lines = list(original)
    lines[2] = rehash(lines[2], lambda r: r["data"].update(i=99))
    assert problem_of(lines) == (
        4,
        "prev",
        "line 4: prev does not match the hash of line 3 "
        "(an earlier record was changed or the chain was spliced)",
    )
    lines = list(original)
    lines[0] = rehash(lines[0], lambda r: r["data"].update(i=99))
    line, kind, message = problem_of(lines)
    assert (line, kind) == (2, "prev")
    assert message.startswith("line 2: prev does not match the hash of line 1 ")
    # a record deleted from the middle
    lines = list(original)
    del lines[1]
    line, kind, message = problem_of(lines)
    assert (line, kind) == (2, "seq")
    assert message == "line 2: seq 2 where 1 was expected (a record was deleted, inserted or moved)"
    # the anchor's record re-hashed at the end
    lines = list(original)
    lines[3] = rehash(lines[3], lambda r: r.update(event="forged"))
    line, kind, message = problem_of(lines, expected_head=(3, written[3]["hash"]))
    assert (line, kind) == (4, "head_mismatch")
    assert message.startswith("line 4: seq 3 does not carry the hash the guard's state")
    # the anchor past the end
    line, kind, message = problem_of(original[:2], expected_head=(3, written[3]["hash"]))
    assert (line, kind) == (3, "truncated")
    assert message == (
        "log ends at seq 1 but the guard's state expects seq 3: records were removed from its end"
    )
    line, kind, message = problem_of([], expected_head=(0, written[0]["hash"]))
    assert message.startswith("log is empty but")


# --- keys, modes, durability ----------------------------------------------------------


def test_a_mac_key_of_sixteen_bytes_is_enough_and_fifteen_is_not(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.log", mac_key=bytes(range(16)), clock=ticking_clock())
    log.append("e")
    assert verify(tmp_path / "a.log", mac_key=bytes(range(16))).ok
    with pytest.raises(ValueError, match="at least 16 bytes"):
        AuditLog(tmp_path / "b.log", mac_key=bytes(15))


def test_a_new_log_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        AuditLog(tmp_path / "a.log", clock=ticking_clock()).append("e")
    finally:
        os.umask(old)
    assert (tmp_path / "a.log").stat().st_mode & 0o777 == 0o600


def test_fsync_is_per_append_when_asked_and_not_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    AuditLog(tmp_path / "a.log", clock=ticking_clock()).append("e")
    assert synced == []
    durable = AuditLog(tmp_path / "b.log", clock=ticking_clock(), fsync=True)
    durable.append("e")
    durable.append("f")
    assert len(synced) == 2


def _half_then_full_disk(fd: int, buf: bytes) -> None:
    os.write(fd, buf[: len(buf) // 2])
    raise OSError(28, "No space left on device")


def test_a_write_that_fails_part_way_leaves_the_log_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.log"
    make_log(path, 3)
    before = path.read_bytes()
    monkeypatch.setattr("modelseal.guard.audit._write_all", _half_then_full_disk)
    log = AuditLog(path, clock=ticking_clock())
    with pytest.raises(OSError, match="No space left") as info:
        log.append("e", data={"pad": "z" * 200})
    assert info.value.errno == 28
    assert path.read_bytes() == before

    # if even the cut-back fails, the caller still sees the write's error
    def no_truncate(fd: int, length: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with pytest.raises(OSError, match="No space left"):
        log.append("e", data={"pad": "z" * 200})


def test_the_last_record_edited_stops_an_append_as_a_hash_problem(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    make_log(path, 2)
    lines = lines_of(path)
    lines[-1] = lines[-1].replace(b'"event_1"', b'"event_X"')
    path.write_bytes(b"".join(lines))
    with pytest.raises(AuditTamperedError) as info:
        AuditLog(path, clock=ticking_clock()).append("e")
    assert info.value.kind == "hash"
    assert str(info.value) == (
        "the last audit record does not match its hash "
        "(it was edited, or the log was written under another key)"
    )
    assert lines_of(path) == lines


# --- the tail reader's bound ----------------------------------------------------------


def test_a_maximal_record_then_a_maximal_torn_tail_is_repaired(tmp_path: Path) -> None:
    """The most a crash can leave: a record of the maximum size, then a torn
    write of the next one. The tail reader must reach back over both (2 x 64 KiB
    + 2 newlines) and the append cut the torn bytes off and say so."""
    at = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    path = tmp_path / "a.log"
    make_log(path, 3)
    log = AuditLog(path, clock=lambda: at)
    big = log.append("e", data=_padded(MAX_LINE_SIZE))
    with path.open("ab") as f:
        f.write(b"t" * MAX_LINE_SIZE)
    record = log.append("after", after=Head(big["seq"], big["hash"]))
    events = [r["event"] for r in iter_records(path)]
    assert events[-3:] == ["e", "audit_tail_repaired", "after"]
    assert list(iter_records(path))[-2]["data"] == {"dropped_bytes": MAX_LINE_SIZE}
    assert record["seq"] == big["seq"] + 2
    assert verify(path).ok


def test_a_tail_longer_than_any_record_is_refused_not_cut(tmp_path: Path) -> None:
    """More bytes after the last newline than a torn record can have is not a
    crash: the append refuses, and the log is left as found."""
    path = tmp_path / "a.log"
    make_log(path, 3)
    with path.open("ab") as f:
        f.write(b"g" * (150 * 1024))
    before = path.read_bytes()
    for attempt in (
        lambda: AuditLog(path, clock=ticking_clock()).append("e"),
        lambda: AuditLog(path).head(),
    ):
        with pytest.raises(AuditFormatError) as info:
            attempt()
        assert str(info.value) == "the audit log ends in a line longer than any record"
    assert path.read_bytes() == before


# --- messages of the verifier ---------------------------------------------------------


def test_every_first_line_and_hash_problem_says_what_is_wrong(tmp_path: Path) -> None:
    plain, keyed = tmp_path / "plain.log", tmp_path / "keyed.log"
    make_log(plain, 2)
    make_log(keyed, 2, mac_key=KEY)

    def message(path: Path, mac_key: bytes | None) -> str:
        p = verify(path, mac_key=mac_key).problem
        assert p is not None
        return p.message

    assert message(keyed, None) == (
        "line 1: prev is not the genesis value: the log is keyed (verify it with its key) "
        "or its first record was replaced"
    )
    assert message(keyed, bytes(32)) == (
        "line 1: prev is not the genesis value for this key: another key, "
        "or the first record was replaced"
    )
    assert message(plain, KEY) == "line 1: the log is not keyed (plain SHA-256), but it should be"
    lines = lines_of(plain)
    lines[1] = lines[1].replace(b'"event_1"', b'"event_X"')
    plain.write_bytes(b"".join(lines))
    assert message(plain, None) == (
        "line 2: hash does not match the record's content (the record was edited)"
        "; if the log is keyed, verify it with its key"
    )
