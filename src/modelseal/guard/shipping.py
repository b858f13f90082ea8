"""Shipping the device audit log to the license server, a bounded batch per heartbeat.

Why ship records and not only the head: the vendor wants to know why its
models refuse to run across a fleet ("refusals by reason code"), and a head
alone says that the log grew, not what it says. The records *are* the hash
chain, so the server can check that each batch continues exactly the chain it
already holds: nothing lost, nothing counted twice, a rewritten log caught
(docs/controlplane.md, "Shipped audit records").

Protocol in short: the server's signed reply says up to which ``seq`` it holds
the device's chain (``ack``; -1: nothing yet). The next beat carries the
records after it, at most ``MAX_SHIPPED_RECORDS`` and ``MAX_SHIPPED_BYTES``,
and only records the state already anchors (an unanchored record may still be
taken back, docs/guard-audit-unlock.md). The cursor lives on the server: a
device that was offline, restarted or lost a reply simply resends from the
last ``ack``, and the server ignores what it already holds. Records the
server does not keep (no reason code, not an unlock) travel as links only
(``seq``, ``prev``, ``hash``): a quarter of the bytes, the chain still whole.

The device half (:class:`AuditShipper`) reads the log file; the server half
(:func:`check_shipped`) is a pure function over the records and the anchor it
stored. Neither imports the server.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from modelseal.guard.audit import (
    MAX_LINE_SIZE,
    AuditFormatError,
    canonical_json,
    genesis_hash,
    parse_record,
    record_hash,
)
from modelseal.license.heartbeat import (
    FULL_RECORD_KEYS,
    LINK_RECORD_KEYS,
    MAX_SHIPPED_BYTES,
    MAX_SHIPPED_RECORDS,
)

#: Events the server keeps whatever their reason: emergency unlocks.
KEPT_EVENTS: Final = frozenset({"unlock_used", "unlock_refused"})


def kept(record: Mapping[str, Any]) -> bool:
    """Does the server keep this record (not just its link)? Refusals, warnings, unlocks."""
    return record.get("reason") is not None or record.get("event") in KEPT_EVENTS


def shipped_form(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as a heartbeat carries it: whole when the server keeps it, else its link."""
    if kept(record):
        return {k: record[k] for k in FULL_RECORD_KEYS}
    return {k: record[k] for k in LINK_RECORD_KEYS}


class AuditShipper:
    """Reads the records a beat ships from one device audit log.

    Remembers the byte offset of the first record it has not shipped yet, so a
    beat reads only the new end of a log that grows forever; a request for an
    earlier ``seq`` (the server's ``ack`` went back: its database was
    restored) rescans from the start. Records up to the anchored head never
    move (the log only ever grows or loses unanchored records at its end), so
    the remembered offset stays valid.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._next_seq = 0
        self._offset = 0
        # the (seq, offset) pair moves together: a manual beat may race the thread's
        self._lock = threading.Lock()
        #: records left after the last batch (a full batch): beat again soon
        self.backlog = False

    def batch(self, after: int, upto: int) -> tuple[dict[str, Any], ...]:
        """Records with ``after < seq <= upto`` in shipped form, bounded in count and bytes.

        Never raises for the log's sake: a log that cannot be read ships nothing
        this beat (the beat itself must still go out, or the offline grace runs
        out), and the Guard's own checks report the log.
        """
        with self._lock:
            try:
                return self._batch(after, upto)
            except (OSError, ValueError):
                self.backlog = False
                return ()

    def _batch(self, after: int, upto: int) -> tuple[dict[str, Any], ...]:
        self.backlog = False
        if upto <= after:
            return ()
        if after + 1 < self._next_seq:
            self._next_seq, self._offset = 0, 0
        out: list[dict[str, Any]] = []
        size = 0
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed below, offset kept across calls
        except FileNotFoundError:
            return ()
        with f:
            f.seek(self._offset)
            while True:
                raw = f.readline(MAX_LINE_SIZE + 1)
                if not raw.endswith(b"\n"):
                    break  # end of file, or a torn line: never past the anchored head
                try:
                    record = parse_record(raw[:-1])
                except AuditFormatError:
                    break  # the Guard's own checks report a damaged log; ship what is sound
                seq = record["seq"]
                if seq > upto:
                    break
                if seq > after:
                    item = shipped_form(record)
                    cost = len(canonical_json(item)) + 1
                    if out and (len(out) >= MAX_SHIPPED_RECORDS or size + cost > MAX_SHIPPED_BYTES):
                        self.backlog = True
                        break
                    if cost > MAX_SHIPPED_BYTES:
                        # one record too large for any batch: its link keeps the chain
                        item = {k: record[k] for k in LINK_RECORD_KEYS}
                        cost = len(canonical_json(item)) + 1
                    out.append(item)
                    size += cost
                else:
                    # before the batch: remember where the records to ship begin
                    self._next_seq, self._offset = seq + 1, f.tell()
        return tuple(out)


@dataclass(frozen=True)
class ShipCheck:
    """What the server makes of one batch against the chain it holds.

    ``anchor`` is the new end of the held chain (unchanged when nothing new
    verified), ``kept`` the new records to store, ``problem`` a break (the
    batch does not continue the chain the server holds: a rewritten log).
    A batch that starts past the anchor (a gap: the server lost what the
    device thinks it acknowledged) is not a break: nothing is taken, and the
    ``ack`` tells the device where to resume.
    """

    anchor: tuple[int, str]
    kept: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


def initial_anchor(head: tuple[int | None, str | None]) -> tuple[int, str]:
    """Where the server's chain starts for a device it holds no records of.

    The last head the device reported (records before it were never shipped:
    a Guard older than shipping wrote them), or the genesis of an unkeyed log
    (the Guard's) for a device that never reported one.
    """
    seq, digest = head
    if seq is None or digest is None:
        return (-1, genesis_hash(None))
    return (int(seq), str(digest))


def _hash_matches(record: Mapping[str, Any]) -> bool:
    """The unkeyed hash over the record's canonical JSON. JSON the Guard cannot have
    written (an infinite number, a lone surrogate) has no canonical form: no match."""
    try:
        digest = record_hash(record)
    except ValueError:  # UnicodeEncodeError is one
        return False
    return hmac.compare_digest(digest, str(record["hash"]))


def check_shipped(
    anchor: tuple[int, str],
    records: Sequence[Mapping[str, Any]],
    heads: Sequence[tuple[int, str] | None] = (),
) -> ShipCheck:
    """Verify that ``records`` (consecutive seq, shape-checked) extend ``anchor``.

    Records at or before the anchor are ignored (resent after a lost reply, or
    by another process of the device): idempotent. A whole record's ``hash``
    must match its content (the Guard's log is unkeyed SHA-256); each
    ``prev`` must be the hash before it; a record at the seq of one of
    ``heads`` (the head the server stored from earlier beats, the one this
    beat reports) must carry that head's hash: a head once reported is part
    of the chain for good.
    """
    pinned = {int(h[0]): str(h[1]) for h in heads if h is not None}
    seq, digest = anchor
    take = [r for r in records if r["seq"] > seq]
    if not take:
        return ShipCheck(anchor=anchor)
    if take[0]["seq"] != seq + 1:
        return ShipCheck(anchor=anchor)
    keep: list[dict[str, Any]] = []
    prev = digest
    for rec in take:
        if not hmac.compare_digest(str(rec["prev"]), prev):
            return ShipCheck(
                anchor=anchor,
                problem=f"record {rec['seq']} does not link to record {rec['seq'] - 1} "
                "the server holds",
            )
        if len(rec) == len(FULL_RECORD_KEYS) and not _hash_matches(rec):
            return ShipCheck(
                anchor=anchor, problem=f"record {rec['seq']} does not match its hash (edited)"
            )
        pin = pinned.get(int(rec["seq"]))
        if pin is not None and not hmac.compare_digest(str(rec["hash"]), pin):
            return ShipCheck(
                anchor=anchor,
                problem=f"record {rec['seq']} is not the audit head reported for that seq",
            )
        if len(rec) == len(FULL_RECORD_KEYS) and kept(rec):
            keep.append(dict(rec))
        prev = str(rec["hash"])
    return ShipCheck(anchor=(int(take[-1]["seq"]), prev), kept=keep)


__all__ = [
    "KEPT_EVENTS",
    "AuditShipper",
    "ShipCheck",
    "check_shipped",
    "initial_anchor",
    "kept",
    "shipped_form",
]
