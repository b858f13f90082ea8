"""The guard's tamper-evident audit log: one JSON record per line, hash-chained.

Why a chain: the log is the evidence a vendor reads after a dispute ("the
model stopped on the 3rd", "someone entered an unlock code"), and it lives on
a machine the vendor does not control. Each record carries the hash of the
one before it, so editing, deleting, inserting or reordering any record
breaks the chain at a line that :func:`verify` names. Two gaps a chain alone
cannot close, and how this module closes them:

* Whoever can compute the hash can rewrite the whole chain after an edit.
  With ``mac_key`` (a device-bound key the guard derives, see
  :func:`derive_audit_mac_key`) the "hash" is HMAC-SHA256, so rewriting
  needs the key, which only the guard on the bound device can derive.
* Cutting records off the end leaves a valid, shorter chain. The guard keeps
  the last ``(seq, hash)`` (:meth:`AuditLog.head`) in its encrypted state
  file and passes it back as ``verify(..., expected_head=...)``.

A crash can leave a partial last line (the write was one ``write(2)`` with
``O_APPEND``, but the page cache need not reach the disk whole). That is
reported as ``torn_tail_bytes``, never as tampering, and the next append
cuts it off and records that it did. Spec: docs/guard-audit-unlock.md.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

from modelseal._json import StrictJSONError, strict_loads
from modelseal.crypto.kdf import hkdf_sha256
from modelseal.errors import FormatError, IntegrityError

GENESIS_LABEL: Final = b"modelseal/audit/v1/genesis"
MIN_MAC_KEY_SIZE: Final = 16
#: A record longer than this is refused by ``append`` and malformed for
#: ``verify``; it bounds the memory a hostile log can make the guard spend.
MAX_LINE_SIZE: Final = 64 * 1024
RECORD_KEYS: Final = frozenset({"seq", "ts", "event", "reason", "data", "prev", "hash"})
#: Event the appender writes when it cut off a torn last line before appending.
TAIL_REPAIRED_EVENT: Final = "audit_tail_repaired"

_HASH_RE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_TS_RE: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


class ReasonCode(StrEnum):
    """Why the guard blocked, warned or unlocked: the ``reason`` of a record.

    Stable strings: the control plane aggregates them across a fleet, so a
    value is never renamed, only added.
    """

    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    OVER_QUOTA = "over_quota"
    FEATURE_MISSING = "feature_missing"
    WRONG_DEVICE = "wrong_device"
    CLOCK_ROLLBACK = "clock_rollback"
    OFFLINE_GRACE_EXCEEDED = "offline_grace_exceeded"
    STATE_TAMPERED = "state_tampered"
    AUDIT_TAMPERED = "audit_tampered"
    REVOKED = "revoked"
    BAD_SIGNATURE = "bad_signature"
    UNLOCK_USED = "unlock_used"


# --- errors ------------------------------------------------------------------


class AuditFormatError(FormatError):
    """A line of the audit log is not a well-formed record."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class AuditTamperedError(IntegrityError):
    """The audit chain is broken: a record was edited, removed, added or moved."""

    def __init__(self, message: str, *, line: int | None = None, kind: str = "") -> None:
        super().__init__(message)
        self.line = line
        self.kind = kind


class AuditTruncatedError(AuditTamperedError):
    """The log ends before the head the guard's state remembers: its end was cut off."""


# --- records -----------------------------------------------------------------


class Head(NamedTuple):
    """``(seq, hash)`` of a log's last record: the anchor the guard keeps in its state."""

    seq: int
    hash: str


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: the bytes a record's hash covers."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _digest(body: bytes, mac_key: bytes | None) -> str:
    if mac_key is None:
        return _b64(hashlib.sha256(body).digest())
    return _b64(hmac.new(mac_key, body, hashlib.sha256).digest())


def _check_key(mac_key: bytes | None) -> bytes | None:
    if mac_key is not None and len(mac_key) < MIN_MAC_KEY_SIZE:
        raise ValueError(f"an audit MAC key needs at least {MIN_MAC_KEY_SIZE} bytes")
    return None if mac_key is None else bytes(mac_key)


def genesis_hash(mac_key: bytes | None = None) -> str:
    """The ``prev`` of record 0. Keyed logs get a keyed genesis, so an unkeyed
    chain cannot be passed off as a keyed one from its first record on."""
    return _digest(GENESIS_LABEL, _check_key(mac_key))


def record_hash(record: Mapping[str, Any], mac_key: bytes | None = None) -> str:
    """The ``hash`` a record must carry: over its canonical JSON without ``hash``."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return _digest(canonical_json(body), _check_key(mac_key))


def derive_audit_mac_key(device_secret: bytes, *, context: bytes = b"") -> bytes:
    """The 32-byte audit MAC key the guard derives from a device-bound secret.

    The guard passes a secret that only opens on the bound device (the
    license KEK); ``context`` (e.g. the license id) separates the logs of
    several licenses on one device. HKDF keeps this key useless for anything
    but the audit MAC.
    """
    return hkdf_sha256(
        device_secret, salt=b"modelseal/audit/v1", info=b"mac\x00" + context, length=32
    )


def format_ts(when: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. ``2026-11-23T20:20:24.123Z``."""
    if when.tzinfo is None:
        raise ValueError("audit timestamps need a timezone-aware datetime")
    when = when.astimezone(UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z"


def parse_record(raw: bytes, *, line: int | None = None) -> dict[str, Any]:
    """Parse and shape-check one record line (without its newline); no hash check."""
    where = f"line {line}: " if line is not None else ""
    if len(raw) > MAX_LINE_SIZE:
        raise AuditFormatError(f"{where}record longer than {MAX_LINE_SIZE} bytes", line=line)
    try:
        obj = strict_loads(raw)
    except StrictJSONError:
        raise AuditFormatError(f"{where}not a JSON record", line=line) from None
    if not isinstance(obj, dict):
        raise AuditFormatError(f"{where}not a JSON object", line=line)
    if set(obj) != RECORD_KEYS:
        raise AuditFormatError(
            f"{where}members must be exactly {', '.join(sorted(RECORD_KEYS))}", line=line
        )
    seq = obj["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise AuditFormatError(f"{where}seq must be a non-negative integer", line=line)
    if not isinstance(obj["ts"], str) or not _TS_RE.fullmatch(obj["ts"]):
        raise AuditFormatError(f"{where}ts must be an RFC 3339 UTC time ending in Z", line=line)
    try:
        datetime.fromisoformat(obj["ts"])
    except ValueError:
        raise AuditFormatError(f"{where}ts is not a valid time", line=line) from None
    if not isinstance(obj["event"], str) or not obj["event"]:
        raise AuditFormatError(f"{where}event must be a non-empty string", line=line)
    if obj["reason"] is not None and not isinstance(obj["reason"], str):
        raise AuditFormatError(f"{where}reason must be a string or null", line=line)
    if not isinstance(obj["data"], dict):
        raise AuditFormatError(f"{where}data must be an object", line=line)
    for name in ("prev", "hash"):
        if not isinstance(obj[name], str) or not _HASH_RE.fullmatch(obj[name]):
            raise AuditFormatError(f"{where}{name} must be 43 base64url characters", line=line)
    return obj


def _build_record(
    *,
    seq: int,
    ts: str,
    event: str,
    reason: str | None,
    data: Mapping[str, Any],
    prev: str,
    mac_key: bytes | None,
) -> bytes:
    record: dict[str, Any] = {
        "seq": seq,
        "ts": ts,
        "event": event,
        "reason": reason,
        "data": dict(data),
        "prev": prev,
    }
    try:
        record["hash"] = _digest(canonical_json(record), mac_key)
        line = canonical_json(record) + b"\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit data must be plain JSON (str keys, no NaN): {exc}") from None
    if len(line) - 1 > MAX_LINE_SIZE:
        raise ValueError(f"audit record longer than {MAX_LINE_SIZE} bytes")
    return line


# --- the log (imperative shell) ----------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _read_tail(fd: int) -> tuple[int, bytes | None]:
    """``(end of the last complete line, that line)`` read backwards from EOF.

    Reading only the tail keeps an append O(record), not O(log).
    """
    pos = os.fstat(fd).st_size
    data = b""
    while True:
        end = data.rfind(b"\n")
        if end != -1:
            start = data.rfind(b"\n", 0, end)
            if start != -1 or pos == 0:
                return pos + end + 1, data[start + 1 : end]
        elif pos == 0:
            return 0, None
        if len(data) > 2 * MAX_LINE_SIZE + 2:
            raise AuditFormatError("the audit log ends in a line longer than any record")
        step = min(16384, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data


def _write_all(fd: int, buf: bytes) -> None:
    view = memoryview(buf)
    while view:
        view = view[os.write(fd, view) :]


def _check_extends(
    head: Head, anchor: Head | None, last: bytes | None, mac_key: bytes | None
) -> None:
    """Refuse to extend a chain whose end is neither ``anchor`` nor one record past it."""
    want = Head(-1, genesis_hash(mac_key)) if anchor is None else Head(*anchor)
    if head.seq == want.seq and hmac.compare_digest(head.hash, want.hash):
        return
    if (
        last is not None
        and head.seq == want.seq + 1
        and hmac.compare_digest(parse_record(last)["prev"], want.hash)
    ):
        return  # the one record a crash may leave unanchored
    raise AuditTamperedError(
        f"the audit log ends at seq {head.seq}, not at the head the guard anchored "
        f"(seq {want.seq}): it was rewritten, cut or replaced",
        kind="head_mismatch",
    )


class AuditLog:
    """Append records to one log file; safe across threads and processes on one device.

    Each append takes an exclusive ``flock`` on the log, reads the last
    record to chain from (another process may have appended since), and
    writes the new line with one ``write(2)`` on an ``O_APPEND`` descriptor.
    ``clock`` is read under the lock, so timestamps follow ``seq`` order when
    the wall clock does.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mac_key: bytes | None = None,
        clock: Callable[[], datetime] = _utcnow,
        fsync: bool = False,
    ) -> None:
        self.path = Path(path)
        self._mac_key = _check_key(mac_key)
        self._clock = clock
        self._fsync = fsync
        self._thread_lock = threading.Lock()

    @property
    def keyed(self) -> bool:
        return self._mac_key is not None

    def _chain_from(self, line: bytes | None) -> Head:
        """The head to append after, refusing to extend a chain whose last link is bad."""
        if line is None:
            return Head(-1, genesis_hash(self._mac_key))
        record = parse_record(line)
        if not hmac.compare_digest(record_hash(record, self._mac_key), record["hash"]):
            raise AuditTamperedError(
                "the last audit record does not match its hash "
                "(it was edited, or the log was written under another key)",
                kind="hash",
            )
        return Head(record["seq"], record["hash"])

    def after_fork(self) -> None:
        """A forked child gets a fresh thread lock: the parent's may have been held."""
        self._thread_lock = threading.Lock()

    def append(
        self,
        event: str,
        *,
        reason: str | None = None,
        data: Mapping[str, Any] | None = None,
        after: Head | Literal["any"] | None = "any",
    ) -> dict[str, Any]:
        """Append one record and return it as written (parsed back from its line).

        ``after`` is the head the caller last anchored (``None``: it anchored
        nothing yet, the log must be empty). The log's last record must be
        that head, or one record chained directly onto it (a crash between
        appending and anchoring); anything else is :class:`AuditTamperedError`
        with kind ``head_mismatch``: extending a chain someone rewrote would
        re-anchor the rewrite (docs/guard-audit-unlock.md, "Anchored appends").

        A failed write (full disk, I/O error) is cut back off before the
        error propagates, so it never leaves a torn line behind.
        """
        if not isinstance(event, str) or not event:
            raise ValueError("an audit event needs a non-empty name")
        reason_text = None if reason is None else str(reason)
        with self._thread_lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                end, last = _read_tail(fd)
                head = self._chain_from(last)
                if after != "any":
                    _check_extends(head, after, last, self._mac_key)
                ts = format_ts(self._clock())
                lines = b""
                if end != size:
                    # A torn line is a write that never completed, not a record:
                    # cut it off (under the lock) and leave evidence that we did.
                    os.ftruncate(fd, end)
                    repair = _build_record(
                        seq=head.seq + 1,
                        ts=ts,
                        event=TAIL_REPAIRED_EVENT,
                        reason=None,
                        data={"dropped_bytes": size - end},
                        prev=head.hash,
                        mac_key=self._mac_key,
                    )
                    lines += repair
                    head = Head(head.seq + 1, json.loads(repair)["hash"])
                line = _build_record(
                    seq=head.seq + 1,
                    ts=ts,
                    event=event,
                    reason=reason_text,
                    data={} if data is None else data,
                    prev=head.hash,
                    mac_key=self._mac_key,
                )
                try:
                    _write_all(fd, lines + line)
                    if self._fsync:
                        os.fsync(fd)
                except OSError:
                    # ENOSPC can land after part of the line: take it back, so
                    # the failure leaves the log as it was (shrinking needs no space)
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, end)
                    raise
            finally:
                os.close(fd)  # also releases the flock
        record: dict[str, Any] = json.loads(line)
        return record

    def rollback(self, record: Mapping[str, Any]) -> bool:
        """Remove ``record`` if it is still the log's last line; True if removed.

        The guard appends a record and then anchors it in its state; when the
        state write fails (a full disk), the record it would have anchored is
        taken back, so a failed write never leaves the log ahead of its anchor.
        """
        line = canonical_json(dict(record)) + b"\n"
        with self._thread_lock:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size < len(line) or os.pread(fd, len(line), size - len(line)) != line:
                    return False
                os.ftruncate(fd, size - len(line))
                return True
            finally:
                os.close(fd)

    def expect_head(self, after: Head | None) -> None:
        """Raise :class:`AuditTamperedError` unless the log ends at ``after`` or one
        record chained onto it: the per-call-cheap form of an anchor check."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if after is None:
                return
            raise AuditTamperedError("the audit log was deleted", kind="truncated") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            _end, last = _read_tail(fd)
        finally:
            os.close(fd)
        _check_extends(self._chain_from(last), after, last, self._mac_key)

    def head(self) -> Head | None:
        """``(seq, hash)`` of the last complete record, or None for an empty or missing log.

        Unverified: the guard stores it after its own append, when it knows
        the value is the one it wrote.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            _end, last = _read_tail(fd)
        finally:
            os.close(fd)
        if last is None:
            return None
        record = parse_record(last)
        return Head(record["seq"], record["hash"])


# --- reading and verifying ---------------------------------------------------


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes, bool]]:
    """``(line number, bytes without newline, complete?)``; only the last can be incomplete."""
    with open(path, "rb") as f:
        number = 0
        while raw := f.readline(MAX_LINE_SIZE + 1):  # bounded: a hostile line cannot OOM us
            number += 1
            if raw.endswith(b"\n"):
                yield number, raw[:-1], True
            elif len(raw) > MAX_LINE_SIZE:
                yield number, raw, True  # over-long: parse_record calls it malformed
                return
            else:
                yield number, raw, False


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every complete record in file order, shape-checked but NOT verified.

    A torn last line is skipped. Use :func:`verify` before trusting content.
    """
    for number, raw, complete in _lines(path):
        if complete:
            yield parse_record(raw, line=number)


ProblemKind = Literal["malformed", "seq", "prev", "hash", "truncated", "head_mismatch"]


@dataclass(frozen=True)
class Problem:
    """The first place the log breaks. ``line`` is 1-based."""

    line: int
    kind: ProblemKind
    message: str


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found. ``ok`` means the chain (and anchor, if given) holds.

    ``records``/``head`` describe the intact prefix, up to the first problem.
    ``torn_tail_bytes`` counts a partial last line (a crash mid-append); it
    is not a problem by itself, but an anchor check still sees a cut-off end.
    """

    path: str
    keyed: bool
    records: int
    head: Head | None
    torn_tail_bytes: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def torn_tail(self) -> bool:
        return self.torn_tail_bytes > 0

    @property
    def tampered(self) -> bool:
        return self.problem is not None and self.problem.kind != "malformed"

    def error(self) -> AuditFormatError | AuditTamperedError | None:
        """The exception for the problem found (:class:`AuditFormatError`,
        :class:`AuditTamperedError` or :class:`AuditTruncatedError`), or None."""
        p = self.problem
        if p is None:
            return None
        message = f"{self.path}: {p.message}"
        if p.kind == "malformed":
            return AuditFormatError(message, line=p.line)
        if p.kind == "truncated":
            return AuditTruncatedError(message, line=p.line, kind=p.kind)
        return AuditTamperedError(message, line=p.line, kind=p.kind)

    def raise_for_problem(self) -> None:
        """Raise :meth:`error` if there is a problem; return if the log is intact."""
        err = self.error()
        if err is not None:
            raise err

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "path": self.path,
            "keyed": self.keyed,
            "records": self.records,
            "head": None if self.head is None else list(self.head),
            "torn_tail_bytes": self.torn_tail_bytes,
            "problem": None
            if self.problem is None
            else {
                "line": self.problem.line,
                "kind": self.problem.kind,
                "message": self.problem.message,
            },
        }


def _prev_problem(record: Mapping[str, Any], number: int, mac_key: bytes | None) -> Problem:
    if number > 1:
        message = (
            f"line {number}: prev does not match the hash of line {number - 1} "
            "(an earlier record was changed or the chain was spliced)"
        )
    elif mac_key is None:
        message = (
            "line 1: prev is not the genesis value: the log is keyed (verify it with its key) "
            "or its first record was replaced"
        )
    elif hmac.compare_digest(record["prev"], genesis_hash(None)):
        message = "line 1: the log is not keyed (plain SHA-256), but it should be"
    else:
        message = (
            "line 1: prev is not the genesis value for this key: another key, "
            "or the first record was replaced"
        )
    return Problem(number, "prev", message)


def _hash_problem(record: Mapping[str, Any], number: int, mac_key: bytes | None) -> Problem:
    message = f"line {number}: hash does not match the record's content (the record was edited)"
    if mac_key is None:
        message += "; if the log is keyed, verify it with its key"
    elif hmac.compare_digest(record_hash(record, None), record["hash"]):
        message = f"line {number}: record has a plain SHA-256 hash, but the log should be keyed"
    return Problem(number, "hash", message)


def verify(
    path: str | os.PathLike[str],
    *,
    mac_key: bytes | None = None,
    expected_head: tuple[int, str] | None = None,
) -> VerifyReport:
    """Check the whole chain of the log at ``path`` and report the first break.

    Streams the file (constant memory). Checks, per line, in this order:
    shape (``malformed``), ``seq`` equals the line's position (``seq``:
    deleted, inserted or moved records), ``prev`` equals the previous hash
    (``prev``), ``hash`` matches the content (``hash``: edited). Then, if
    ``expected_head`` is given, that the record with that seq exists
    (``truncated``) and carries that hash (``head_mismatch``). The log may
    extend past the anchor: the guard can crash between appending and saving
    its state.
    """
    mac_key = _check_key(mac_key)
    anchor: Head | None = None
    if expected_head is not None:
        anchor = Head(int(expected_head[0]), str(expected_head[1]))
    prev = genesis_hash(mac_key)
    head: Head | None = None
    count = 0
    torn = 0
    problem: Problem | None = None
    anchor_hash: str | None = None
    for number, raw, complete in _lines(path):
        if not complete:
            torn = len(raw)
            break
        try:
            record = parse_record(raw, line=number)
        except AuditFormatError as exc:
            problem = Problem(number, "malformed", str(exc))
            break
        if record["seq"] != count:
            problem = Problem(
                number,
                "seq",
                f"line {number}: seq {record['seq']} where {count} was expected "
                "(a record was deleted, inserted or moved)",
            )
            break
        if not hmac.compare_digest(record["prev"], prev):
            problem = _prev_problem(record, number, mac_key)
            break
        if not hmac.compare_digest(record_hash(record, mac_key), record["hash"]):
            problem = _hash_problem(record, number, mac_key)
            break
        prev = record["hash"]
        head = Head(record["seq"], record["hash"])
        if anchor is not None and head.seq == anchor.seq:
            anchor_hash = head.hash
        count += 1
    if problem is None and anchor is not None:
        if anchor_hash is None:
            ends = "is empty" if head is None else f"ends at seq {head.seq}"
            problem = Problem(
                count + 1,
                "truncated",
                f"log {ends} but the guard's state expects seq {anchor.seq}: "
                "records were removed from its end",
            )
        elif not hmac.compare_digest(anchor_hash, anchor.hash):
            problem = Problem(
                anchor.seq + 1,
                "head_mismatch",
                f"line {anchor.seq + 1}: seq {anchor.seq} does not carry the hash the guard's "
                "state remembers (the log was rewritten)",
            )
    return VerifyReport(
        path=os.fspath(path),
        keyed=mac_key is not None,
        records=count,
        head=head,
        torn_tail_bytes=torn,
        problem=problem,
    )


__all__ = [
    "GENESIS_LABEL",
    "TAIL_REPAIRED_EVENT",
    "AuditFormatError",
    "AuditLog",
    "AuditTamperedError",
    "AuditTruncatedError",
    "Head",
    "Problem",
    "ProblemKind",
    "ReasonCode",
    "VerifyReport",
    "canonical_json",
    "derive_audit_mac_key",
    "format_ts",
    "genesis_hash",
    "iter_records",
    "parse_record",
    "record_hash",
    "verify",
]
