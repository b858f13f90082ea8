"""guard/shipping.py: which records a beat ships, and the server's check of a batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.guard.audit import AuditLog, canonical_json, genesis_hash, iter_records
from modelseal.guard.shipping import AuditShipper, check_shipped, initial_anchor, shipped_form
from modelseal.license.heartbeat import (
    MAX_SHIPPED_BYTES,
    MAX_SHIPPED_RECORDS,
    HeartbeatRequest,
    parse_shipped_records,
)


def _log(path: Path, events: list[tuple[str, str | None, dict[str, Any]]]) -> list[dict[str, Any]]:
    log = AuditLog(path, clock=lambda: datetime(2026, 12, 1, tzinfo=UTC))
    for event, reason, data in events:
        log.append(event, reason=reason, data=data)
    return list(iter_records(path))


def test_kept_records_go_whole_the_rest_as_links(tmp_path: Path) -> None:
    records = _log(
        tmp_path / "a.jsonl",
        [
            ("verified", None, {}),
            ("refused", "expired", {"detail": "x"}),
            ("unlock_used", None, {"serial": 1}),
            ("heartbeat", None, {"code": "VALID"}),
        ],
    )
    forms = [shipped_form(r) for r in records]
    assert [set(f) for f in forms] == [
        {"seq", "prev", "hash"},
        set(records[1]),
        set(records[2]),
        {"seq", "prev", "hash"},
    ]


def test_batches_resume_after_the_ack_and_rescan_when_it_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    records = _log(path, [("refused", "expired", {"i": i}) for i in range(100)])
    shipper = AuditShipper(path)
    first = shipper.batch(-1, 99)
    assert [r["seq"] for r in first] == list(range(MAX_SHIPPED_RECORDS))
    assert shipper.backlog
    second = shipper.batch(first[-1]["seq"], 99)
    assert [r["seq"] for r in second] == list(range(64, 100)) and not shipper.backlog
    assert shipper.batch(99, 99) == ()
    # only up to the anchored head
    assert [r["seq"] for r in shipper.batch(10, 12)] == [11, 12]
    # the server lost records (a restored database): from its ack again
    again = shipper.batch(4, 99)
    assert again[0] == shipped_form(records[5])


def test_the_byte_budget_holds_and_an_oversized_record_goes_as_its_link(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    big = "y" * (MAX_SHIPPED_BYTES + 10)
    _log(
        path,
        [("refused", "expired", {"pad": "x" * 3000}) for _ in range(8)]
        + [("refused", "expired", {"pad": big})],
    )
    shipper = AuditShipper(path)
    batch = shipper.batch(-1, 8)
    assert sum(len(canonical_json(r)) + 1 for r in batch) <= MAX_SHIPPED_BYTES
    assert shipper.backlog and len(batch) == 5
    rest = shipper.batch(batch[-1]["seq"], 8)
    assert [r["seq"] for r in rest] == [5, 6, 7] and shipper.backlog
    last = shipper.batch(7, 8)
    assert last == ({"seq": 8, "prev": last[0]["prev"], "hash": last[0]["hash"]},)
    # and the server accepts the link in place of the record
    records = list(iter_records(path))
    checked = check_shipped(
        initial_anchor((None, None)), [shipped_form(r) for r in records[:8]] + list(last)
    )
    assert checked.problem is None and checked.anchor == (8, records[8]["hash"])
    assert len(checked.kept) == 8


def test_a_torn_last_line_is_not_shipped(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    _log(path, [("refused", "expired", {})] * 3)
    with open(path, "ab") as f:
        f.write(b'{"seq":3,"ts"')
    assert [r["seq"] for r in AuditShipper(path).batch(-1, 10)] == [0, 1, 2]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from(["refused", "heartbeat", "unlock_used"]), min_size=1, max_size=30),
    st.data(),
)
def test_any_prefix_split_verifies_and_any_change_breaks(
    tmp_path_factory: Any, events: list[str], data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("ship") / "a.jsonl"
    records = _log(path, [(e, "expired" if e == "refused" else None, {}) for e in events])
    forms = [shipped_form(r) for r in records]
    cut = data.draw(st.integers(0, len(forms)))
    anchor = initial_anchor((None, None))
    first = check_shipped(anchor, forms[:cut])
    second = check_shipped(first.anchor, forms)  # resent from the start: the held part ignored
    assert first.problem is None and second.problem is None
    assert second.anchor == (records[-1]["seq"], records[-1]["hash"])
    assert len(first.kept) + len(second.kept) == sum(1 for e in events if e != "heartbeat")
    # one changed member anywhere after the anchor is a break, never silently taken
    at = data.draw(st.integers(cut, len(forms) - 1)) if cut < len(forms) else None
    if at is not None:
        bad = [dict(f) for f in forms]
        if "event" in bad[at]:
            bad[at]["data"] = {"changed": True}
        else:
            bad[at]["prev"] = genesis_hash(b"k" * 32)
        assert check_shipped(first.anchor, bad).problem is not None


def test_the_request_round_trips_and_refuses_bad_batches() -> None:
    rec = {"seq": 0, "prev": "A" * 43, "hash": "B" * 43}
    request = HeartbeatRequest(
        license_id="lic", device_id="dev", nonce="A" * 22, time=1, audit_records=(rec,)
    )
    assert HeartbeatRequest.from_body(request.to_body()) == request
    bad: list[object] = [
        [rec, {**rec, "seq": 2}],  # not consecutive
        [{**rec, "hash": "short"}],
        [{**rec, "extra": 1}],
        [{**rec, "seq": -1}],
        [dict(rec, event="x")],
        [{**rec, "seq": i} for i in range(MAX_SHIPPED_RECORDS + 1)],
        "not a list",
    ]
    from modelseal.license.errors import LicenseFormatError

    for value in bad:
        try:
            parse_shipped_records(value)
        except LicenseFormatError:
            continue
        raise AssertionError(f"accepted {json.dumps(value)[:80]}")


def test_an_unreadable_log_ships_nothing_and_never_stops_the_beat(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    _log(path, [("refused", "expired", {})] * 3)
    shipper = AuditShipper(path)
    path.unlink()
    path.mkdir()  # reading a directory: IsADirectoryError, an OSError
    assert shipper.batch(-1, 2) == () and not shipper.backlog


def test_json_no_guard_writes_is_a_break_not_a_crash(tmp_path: Path) -> None:
    """A record can hold inf (built in-process; ``strict_loads`` now refuses ``1e400``)
    or a lone surrogate (which strict JSON lets through); neither has a canonical
    form, so the hash check must say no rather than raise (a 500 on the server)."""
    records = _log(tmp_path / "a.jsonl", [("refused", "expired", {})])
    anchor = initial_anchor((None, None))
    for odd in (float("inf"), "\ud800"):
        bad = {**records[0], "data": {"x": odd}}
        assert check_shipped(anchor, [bad]).problem is not None
