"""The server audit log: every state change, hash-chained per vendor, in the database.

Why here and not in each service: an audit trail that depends on every
service remembering to call it misses the one that forgot. So the log hooks
the ORM session itself (:func:`install`): ``before_flush`` notes each row
created, changed or deleted (before/after of the columns that matter; never
a secret, hash or sealed column), and ``before_commit`` appends the notes,
in the same transaction, to the vendor's chain. A change and its record
commit together or not at all. Services add what a diff cannot show
(a login failure, an unlock code's reason and second factor) with
:func:`note`.

The construction is the device audit log's (``guard/audit.py``,
docs/guard-audit-unlock.md §1): records ``{seq, ts, event, reason, data,
prev, hash}`` with ``hash = HMAC-SHA256(key, canonical JSON without
hash)``, ``prev`` the previous record's hash, record 0 chained to the
keyed genesis. The key is ``HKDF(master key, "modelseal/cp/audit/" ||
vendor id)``: whoever holds only the database can edit rows but cannot
recompute the chain, and one vendor's key says nothing about another's.

Appends are serialised per vendor so the chain never forks: a PostgreSQL
transaction-scoped advisory lock on the vendor (held to commit), SQLite's
database write lock (every transaction is ``BEGIN IMMEDIATE``), and a
unique ``(vendor_id, seq)`` as the last line of defence.

What it does not catch: rows cut off the end of the chain (a shorter chain
is still valid; export the head regularly to compare), and writes that
bypass the ORM (the heartbeat path: device-reported usage, not an
administrative change).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from modelseal.controlplane.models import AuditEvent
from modelseal.controlplane.secretbox import SecretBox
from modelseal.guard.audit import format_ts, genesis_hash, record_hash

PENDING = "modelseal.audit.pending"
ACTOR = "modelseal.audit.actor"
ADDRESS = "modelseal.audit.address"
KEYS = "modelseal.audit.keys"

#: row kinds by table; tables not listed are recorded under their table name
KINDS = {
    "vendors": "vendor",
    "signing_keys": "key",
    "api_tokens": "token",
    "plans": "plan",
    "customers": "customer",
    "models": "model",
    "licenses": "license",
    "devices": "device",
    "users": "user",
    "webhook_endpoints": "webhook",
}
#: tables whose changes are recorded by explicit notes instead (or never: the log itself)
SKIP_TABLES = frozenset(
    {
        "audit_events",
        "user_sessions",
        "recovery_codes",
        "unlock_issues",
        "webhook_messages",
        "webhook_attempts",
        "webhook_marks",
        "device_events",
    }
)
#: columns the device reports (heartbeats) or bookkeeping of the login limiter: not admin changes
SKIP_COLUMNS = frozenset(
    {
        "last_seen",
        "calls_used",
        "audit_seq",
        "audit_hash",
        "hb_time",
        "hb_nonces",
        "events_seq",
        "events_hash",
        "failed_logins",
        "totp_last_step",
        "lease_until",
        "lease_owner",
    }
)


def _secret(column: str) -> bool:
    """Never copied into the log: secrets, their hashes, and bulky device material."""
    return column.endswith(("_sealed", "_hash")) or column in ("token", "components")


@dataclass
class AuditKeys:
    """Per-vendor MAC keys derived from the master key (cached: HKDF per append is waste)."""

    box: SecretBox
    _cache: dict[str, bytes] = field(default_factory=dict)

    def for_vendor(self, vendor_id: str) -> bytes:
        key = self._cache.get(vendor_id)
        if key is None:
            key = self._cache[vendor_id] = self.box.derive("audit/" + vendor_id)
        return key


@dataclass(frozen=True)
class Note:
    vendor_id: str
    event: str
    reason: str | None
    data: dict[str, Any]


# --- who is acting -----------------------------------------------------------------------


def bind(session: Session, *, actor: Mapping[str, Any], address: str | None = None) -> None:
    """Name who the session's changes are made by (a token, a user, the system)."""
    session.info[ACTOR] = dict(actor)
    if address is not None:
        session.info[ADDRESS] = address


def _who(session: Session) -> dict[str, Any]:
    return {
        "actor": session.info.get(ACTOR, {"kind": "system"}),
        "address": session.info.get(ADDRESS),
    }


def note(
    session: Session,
    vendor_id: str,
    event_name: str,
    data: Mapping[str, Any] | None = None,
    *,
    reason: str | None = None,
) -> None:
    """Record what a row diff cannot show; appended when the session commits."""
    payload = {**_who(session), **(data or {})}
    session.info.setdefault(PENDING, []).append(Note(vendor_id, event_name, reason, payload))


# --- capture (before_flush) ------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _target(obj: Any, kind: str) -> dict[str, Any]:
    """What a record is about; with the license it belongs to (webhooks order by it)."""
    target: dict[str, Any] = {"kind": kind, "id": _row_id(obj)}
    lic = getattr(obj, "license_id", None)
    if lic is not None:
        target["license"] = str(lic)
    return target


def _row_id(obj: Any) -> str:
    ident = inspect(obj).identity
    if ident is not None:
        return "/".join(str(i) for i in ident)
    return str(getattr(obj, "id", getattr(obj, "kid", "")))


def _vendor_of(obj: Any, table: str) -> str | None:
    if table == "vendors":
        return str(obj.id)
    vendor = getattr(obj, "vendor_id", None)
    return None if vendor is None else str(vendor)


def _snapshot(obj: Any) -> dict[str, Any]:
    state = inspect(obj)
    return {
        attr.key: _plain(state.attrs[attr.key].value)
        for attr in state.mapper.column_attrs
        if not _secret(attr.key) and attr.key not in SKIP_COLUMNS
    }


def _changes(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    state = inspect(obj)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        if attr.key in SKIP_COLUMNS:
            continue
        hist = state.attrs[attr.key].history
        if not hist.has_changes():
            continue
        old = hist.deleted[0] if hist.deleted else None
        new = hist.added[0] if hist.added else None
        if old == new:
            continue
        if _secret(attr.key):
            before[attr.key] = after[attr.key] = "(changed)"
        else:
            before[attr.key], after[attr.key] = _plain(old), _plain(new)
    return before, after


def _semantic(kind: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    """The domain's name for a change where there is one (webhooks use the same names)."""
    if kind == "license" and "status" in after:
        return {"revoked": "license.revoked", "suspended": "license.suspended"}.get(
            str(after["status"]), "license.reinstated"
        )
    if kind == "license" and "expires_at" in after:
        return "license.renewed"
    if kind == "device" and after.get("status") == "deactivated":
        return "device.deactivated"
    if kind == "token" and after.get("revoked_at") is not None:
        return "token.revoked"
    if kind == "key" and after.get("active") is False:
        return "key.retired"
    if kind == "user" and after.get("disabled_at") is not None:
        return "user.disabled"
    if kind == "user" and "totp_enabled" in after:
        return "user.totp_enabled" if after["totp_enabled"] else "user.totp_reset"
    if kind == "user" and "password_hash" in after:
        return "user.password_changed"
    return f"{kind}.updated"


def _capture(session: Session, _context: Any, _instances: Any) -> None:
    if KEYS not in session.info:
        return
    pending: list[Note] = session.info.setdefault(PENDING, [])
    who = _who(session)
    for obj, what in [(o, "created") for o in session.new] + [
        (o, "deleted") for o in session.deleted
    ]:
        table = obj.__table__.name
        vendor = _vendor_of(obj, table)
        if table in SKIP_TABLES or vendor is None:
            continue
        kind = KINDS.get(table, table)
        name = {"device": "device.activated"}.get(kind, f"{kind}.{what}")
        snap = _snapshot(obj)
        data = {**who, "target": _target(obj, kind)}
        data["after" if what == "created" else "before"] = snap
        pending.append(Note(vendor, name if what == "created" else f"{kind}.deleted", None, data))
    for obj in session.dirty:
        table = obj.__table__.name
        vendor = _vendor_of(obj, table)
        if table in SKIP_TABLES or vendor is None or not session.is_modified(obj):
            continue
        before, after = _changes(obj)
        if not after:
            continue
        kind = KINDS.get(table, table)
        data = {
            **who,
            "target": _target(obj, kind),
            "before": before,
            "after": after,
        }
        pending.append(Note(vendor, _semantic(kind, before, after), None, data))


# --- append (before_commit) ------------------------------------------------------------------


def _lock_key(vendor_id: str) -> int:
    return int.from_bytes(
        hashlib.sha256(b"modelseal/audit/" + vendor_id.encode()).digest()[:8], "big", signed=True
    )


def _lock(session: Session, vendor_id: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(vendor_id)})
    # SQLite: the transaction already holds the database write lock (BEGIN IMMEDIATE)


def head(session: Session, vendor_id: str) -> tuple[int, str] | None:
    row = session.execute(
        select(AuditEvent.seq, AuditEvent.hash)
        .where(AuditEvent.vendor_id == vendor_id)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else (int(row[0]), str(row[1]))


#: called with every commit's notes, in its transaction (the webhooks outbox)
SUBSCRIBERS: list[Callable[[Session, list[Note]], None]] = []


def subscribe(fn: Callable[[Session, list[Note]], None]) -> None:
    if fn not in SUBSCRIBERS:
        SUBSCRIBERS.append(fn)


def _append(session: Session, keys: AuditKeys) -> None:
    session.flush()  # runs _capture over whatever the unit of work still holds
    pending: list[Note] = session.info.pop(PENDING, [])
    if not pending:
        return
    by_vendor: dict[str, list[Note]] = {}
    for n in pending:
        by_vendor.setdefault(n.vendor_id, []).append(n)
    now = format_ts(datetime.now(UTC))
    # a fixed order of locks: two transactions touching two vendors cannot deadlock
    for vendor_id in sorted(by_vendor):
        _lock(session, vendor_id)
        key = keys.for_vendor(vendor_id)
        last = head(session, vendor_id)
        seq, prev = (0, genesis_hash(key)) if last is None else (last[0] + 1, last[1])
        for n in by_vendor[vendor_id]:
            record = {
                "seq": seq,
                "ts": now,
                "event": n.event,
                "reason": n.reason,
                "data": n.data,
                "prev": prev,
            }
            digest = record_hash(record, key)
            session.add(AuditEvent(vendor_id=vendor_id, hash=digest, **record))
            seq, prev = seq + 1, digest
    for fn in SUBSCRIBERS:
        fn(session, pending)
    session.flush()


def _discard(session: Session, *_args: Any) -> None:
    session.info.pop(PENDING, None)


def install(factory: sessionmaker[Session], box: SecretBox) -> None:
    """Audit every session this factory makes (the server's; ``controlplane init``'s)."""
    keys = AuditKeys(box)
    info = factory.kw.setdefault("info", {})
    info[KEYS] = keys
    event.listen(factory, "before_flush", _capture)

    def _before_commit(session: Session) -> None:
        if session.info.get(KEYS) is keys:
            _append(session, keys)

    event.listen(factory, "before_commit", _before_commit)
    event.listen(factory, "after_rollback", _discard)


# --- reading and verifying ---------------------------------------------------------------------


def record_of(row: AuditEvent) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "ts": row.ts,
        "event": row.event,
        "reason": row.reason,
        "data": row.data,
        "prev": row.prev,
        "hash": row.hash,
    }


def query(
    session: Session,
    vendor_id: str,
    *,
    after_seq: int | None = None,
    event_prefix: str | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    q = select(AuditEvent).where(AuditEvent.vendor_id == vendor_id)
    if after_seq is not None:
        q = q.where(AuditEvent.seq > after_seq)
    if event_prefix:
        q = q.where(AuditEvent.event.startswith(event_prefix, autoescape=True))
    return list(session.execute(q.order_by(AuditEvent.seq).limit(limit)).scalars())


def iter_all(
    session: Session, vendor_id: str, *, batch: int = 1000, release: bool = False
) -> Iterator[dict[str, Any]]:
    """Every record in order, a batch at a time (exports and verification stream).

    ``release`` ends the read transaction after each batch: an export to a
    slow client must not hold SQLite's write lock (every transaction there
    is ``BEGIN IMMEDIATE``); the log is append-only, so batches by ``seq``
    still add up to one consistent prefix.
    """
    after = -1
    while True:
        rows = [record_of(r) for r in query(session, vendor_id, after_seq=after, limit=batch)]
        if release:
            session.rollback()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1]["seq"]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    head: tuple[int, str] | None
    problem: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "head": None if self.head is None else list(self.head),
            "problem": self.problem,
        }


#: records per read transaction of :func:`verify` with ``release`` (each holds SQLite's lock)
VERIFY_BATCH = 1000


def verify(session: Session, keys: AuditKeys, vendor_id: str, *, release: bool = False) -> Verdict:
    """Walk the chain from the genesis; name the first record that does not fit.

    ``release``: read in short transactions of ``VERIFY_BATCH`` records (see
    :func:`iter_all`), for a session of its own; the server's route uses it so
    that a long chain never holds the write lock (SQLite) or one long-running
    transaction (PostgreSQL) for the whole walk.
    """
    key = keys.for_vendor(vendor_id)
    prev = genesis_hash(key)
    count = 0
    last: tuple[int, str] | None = None
    for record in iter_all(session, vendor_id, batch=VERIFY_BATCH, release=release):
        seq = record["seq"]
        problem = None
        if seq != count:
            problem = {"seq": seq, "kind": "missing", "expected_seq": count}
        elif record["prev"] != prev:
            problem = {"seq": seq, "kind": "broken_link"}
        elif record_hash(record, key) != record["hash"]:
            problem = {"seq": seq, "kind": "edited"}
        if problem is not None:
            return Verdict(False, count, last, problem)
        prev = record["hash"]
        last = (seq, record["hash"])
        count += 1
    return Verdict(True, count, last, None)


def verify_released(
    request_session: Session, sessions: sessionmaker[Session], keys: AuditKeys, vendor_id: str
) -> Verdict:
    """:func:`verify` for a request handler (API or console): ends the request's own
    transaction first, then walks in short read transactions of a session of its own.

    On SQLite every transaction holds the database write lock (BEGIN IMMEDIATE),
    so a long chain walked inside the request's transaction stalled every writer
    for the whole walk (red team #12, finding 3).
    """
    request_session.commit()
    with sessions() as session:
        return verify(session, keys, vendor_id, release=True)
