"""Rule: a record's hash covers every member but ``hash`` itself
(docs/guard-audit-unlock.md): seq, ts, event, reason, data and prev. An
edit of any one of them, without re-hashing, is caught at that very line.

Deterministic on purpose: the property test over random byte flips reaches
``ts`` only now and then, and a hash that skipped ``ts`` (backdating an
event) passed it for most seeds.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from modelseal.guard.audit import canonical_json, record_hash, verify
from tests.guard.test_audit import KEY, lines_of, make_log

CHANGES: dict[str, Any] = {
    "seq": 7,
    "ts": "2020-01-01T00:00:00.000Z",
    "event": "something_else",
    "reason": "other_reason",
    "data": {"i": -1},
    "prev": "A" * 43,
}


@pytest.mark.parametrize("keyed", [False, True])
@pytest.mark.parametrize("member", sorted(CHANGES))
def test_record_hash_depends_on_every_member(tmp_path: Path, member: str, keyed: bool) -> None:
    key = KEY if keyed else None
    record = make_log(tmp_path / "a.log", 1, mac_key=key)[0]
    assert record_hash(record, key) == record["hash"]
    changed = dict(record, **{member: CHANGES[member]})
    assert record_hash(changed, key) != record["hash"]
    # and the hash ignores nothing else: only ``hash`` is left out of its input
    assert record_hash(dict(record, hash="B" * 43), key) == record["hash"]


@pytest.mark.parametrize("keyed", [False, True])
@pytest.mark.parametrize("line", range(3))
def test_a_backdated_timestamp_is_caught_at_its_line(
    tmp_path: Path, line: int, keyed: bool
) -> None:
    key = KEY if keyed else None
    path = tmp_path / "a.log"
    make_log(path, 3, mac_key=key)
    lines = lines_of(path)
    record = json.loads(lines[line])
    record["ts"] = CHANGES["ts"]  # still a well-formed RFC 3339 time; hash left as it was
    lines[line] = canonical_json(record) + b"\n"
    path.write_bytes(b"".join(lines))
    report = verify(path, mac_key=key)
    assert report.problem is not None
    assert (report.problem.line, report.problem.kind) == (line + 1, "hash")
    assert report.records == line


@pytest.mark.parametrize("keyed", [False, True])
def test_every_digit_of_ts_is_covered(tmp_path: Path, keyed: bool) -> None:
    # each digit of the timestamp, moved by one, with the hash left alone
    key = KEY if keyed else None
    path = tmp_path / "a.log"
    make_log(path, 1, mac_key=key)
    original = path.read_bytes()
    record = json.loads(original)
    ts = record["ts"]
    digits = [i for i, c in enumerate(ts) if c.isdigit()]
    assert len(digits) == 17  # YYYY MM DD hh mm ss mmm
    for i in digits:
        moved = ts[:i] + str((int(ts[i]) + 1) % 10) + ts[i + 1 :]
        path.write_bytes(original.replace(ts.encode(), moved.encode()))
        report = verify(path, mac_key=key)
        assert report.problem is not None and report.problem.line == 1, moved
        try:
            datetime.fromisoformat(moved)
        except ValueError:
            assert report.problem.kind == "malformed", moved  # e.g. month 21
        else:
            assert report.problem.kind == "hash", moved  # a valid time: only the hash decides
