"""The heartbeat path: authenticate the device, decide, record, sign the reply.

This is the server's hottest path (every device, every interval), so it
stays off the ORM: one Core read on a pooled connection, and the write
(last seen, usage, audit head) goes through **group commit**: a writer
thread commits every write queued while the previous commit was in flight,
in one transaction, and each request waits for the commit of its batch
before its reply is signed. So a reply is never sent for a heartbeat that
a crash could lose, and the database sees one commit per batch instead of
one per device (bench/controlplane_load.py measures both).

Freshness (a captured heartbeat replayed): the device's ``time`` must not
go back, and at one ``time`` each nonce is accepted once. The write is
conditional on both (one ``UPDATE ... WHERE`` that returns the row only when
it applied), so two copies of one request racing each other record once and
the other gets 409 ``stale_heartbeat``. The Guard sends its forward-only
clock, so its own beats never go back.

Audit head: a reported head that does not extend the stored one (a smaller
sequence number, or the same one with another hash) on a newer beat flags
the device (``audit_rollback``, persisted) and every reply until the vendor
clears it says ``AUDIT_ROLLBACK``, on which the Guard locks.

Shipped audit records (guard/shipping.py): a beat may carry the device
audit records after the ``ack`` of the last reply. They must continue the
chain the server holds (``events_seq``/``events_hash``, starting from the
stored head or the genesis); the cursor moves in the same conditional
``UPDATE``, and the records the server keeps (refusals, warnings, unlocks)
are inserted by the same group-commit transaction, ``ON CONFLICT DO
NOTHING`` on (device, seq, hash): a batch resent after a lost reply, or by
another process of the device, is stored once. A batch that does not link
flags the device ``audit_chain_break`` (persisted, like a rollback). A beat
that ships nothing costs two more columns in the read and the write.

Leases (server-side quotas): a beat asking for a lease takes the rare path,
one ORM transaction that locks the license row, so concurrent leases of one
license never grant more than its quota (docs/controlplane.md, "Leases").

Signing keys and device credentials are cached per process once unsealed.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import threading
import time
from concurrent.futures import Future
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from modelseal.controlplane.errors import (
    InvalidRequestError,
    ServerUnavailableError,
    StaleRequestError,
    UnauthorizedError,
)
from modelseal.controlplane.models import Device, License, Plan
from modelseal.controlplane.secretbox import SecretBox
from modelseal.controlplane.services import audit, licensing
from modelseal.controlplane.services.vendors import unseal_signing_key
from modelseal.crypto import PrivateKey
from modelseal.guard.shipping import check_shipped, initial_anchor
from modelseal.license.errors import LicenseFormatError
from modelseal.license.heartbeat import (
    MAX_LEASE,
    HeartbeatRequest,
    HeartbeatVerdict,
    Lease,
    check_mac,
    sign_reply,
)

_LOOKUP = (
    "SELECT d.id, d.status, d.credential_sealed, d.token_exp, l.status, l.expires_at,"
    " l.vendor_id, p.heartbeat_interval, v.name,"
    " d.hb_time, d.hb_nonces, d.flag, d.audit_seq, d.audit_hash,"
    " p.max_calls, l.calls_leased, d.lease_end, d.calls_used,"
    # this device's rank among the license's seats (oldest first): past max_devices
    # (the plan's limit lowered) it is one too many
    " CASE WHEN p.max_devices IS NULL THEN NULL ELSE p.max_devices - (SELECT count(*)"
    " FROM devices o WHERE o.license_id = d.license_id AND o.status <> 'deactivated'"
    " AND (o.activated_at < d.activated_at OR (o.activated_at = d.activated_at AND o.id < d.id)))"
    " END, d.events_seq, d.events_hash"
    " FROM devices d JOIN licenses l ON l.id = d.license_id"
    " JOIN plans p ON p.id = l.plan_id JOIN vendors v ON v.id = l.vendor_id"
    " WHERE d.license_id = :lic AND d.device_id = :dev"
)
#: nonces kept for one device time (space-joined); more at one time is refused
NONCES_CAP = 40 * 23
_FRESH = (
    "(hb_time IS NULL OR hb_time < CAST(:time AS BIGINT) OR (hb_time = CAST(:time AS BIGINT)"
    " AND {find}(hb_nonces, CAST(:nonce AS TEXT)) = 0 AND length(hb_nonces) < {cap}))"
)
_RECORD = (
    "UPDATE devices SET last_seen = :now,"
    " calls_used = CASE WHEN calls_used > :calls THEN calls_used ELSE :calls END,"
    " audit_hash = CASE WHEN CAST(:seq AS BIGINT) IS NOT NULL"
    " AND (audit_seq IS NULL OR :seq > audit_seq) THEN CAST(:hash AS TEXT) ELSE audit_hash END,"
    " audit_seq = CASE WHEN CAST(:seq AS BIGINT) IS NOT NULL"
    " AND (audit_seq IS NULL OR :seq > audit_seq) THEN :seq ELSE audit_seq END,"
    " flagged_at = CASE WHEN flag IS NULL AND CAST(:flag AS TEXT) IS NOT NULL THEN :now"
    " ELSE flagged_at END,"
    " flag = COALESCE(flag, CAST(:flag AS TEXT)),"
    # the end of the shipped chain only moves forward (two beats of one device may race)
    " events_hash = CASE WHEN events_seq IS NULL OR :eseq > events_seq"
    " THEN CAST(:ehash AS TEXT) ELSE events_hash END,"
    " events_seq = CASE WHEN events_seq IS NULL OR :eseq > events_seq"
    " THEN :eseq ELSE events_seq END,"
    " hb_nonces = CASE WHEN hb_time = CAST(:time AS BIGINT)"
    " THEN hb_nonces || ' ' || CAST(:nonce AS TEXT) ELSE CAST(:nonce AS TEXT) END,"
    " hb_time = :time"
    " WHERE id = :id AND {fresh} RETURNING id"
)


_EVENT = (
    "INSERT INTO device_events (vendor_id, license_id, device_id, seq, ts, at, event, reason,"
    " data, hash, received_at) VALUES (:vendor, :license, :device, :seq, :ts, :at, :event,"
    " :reason, {data}, :hash, :now) ON CONFLICT (device_id, seq, hash) DO NOTHING"
)


def event_statement(dialect: str) -> str:
    """Insert one kept device audit record; a copy already stored is skipped."""
    return _EVENT.format(data="CAST(:data AS JSON)" if dialect == "postgresql" else ":data")


def _record_time(ts: str, default: int) -> int:
    """A record's RFC 3339 time in Unix seconds (the device's clock; the receipt time if odd)."""
    try:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return default
    if when.tzinfo is None:
        return default
    return max(0, min(int(when.timestamp()), 2**53))


def event_rows(
    kept: list[dict[str, Any]], *, vendor: str, license_id: str, device: str, now: int
) -> list[dict[str, Any]]:
    """The ``device_events`` rows of the records a beat shipped and the server keeps."""
    return [
        {
            "vendor": vendor,
            "license": license_id,
            "device": device,
            "seq": rec["seq"],
            "ts": rec["ts"],
            "at": _record_time(rec["ts"], now),
            "event": rec["event"],
            "reason": rec["reason"],
            "data": json.dumps(rec["data"], sort_keys=True, separators=(",", ":")),
            "hash": rec["hash"],
            "now": now,
        }
        for rec in kept
    ]


def record_statement(dialect: str) -> str:
    """The conditional write: it applies (and returns the id) only to a fresh heartbeat."""
    find = "strpos" if dialect == "postgresql" else "instr"
    return _RECORD.replace("{fresh}", _FRESH.format(find=find, cap=NONCES_CAP))


def is_fresh(hb_time: int | None, hb_nonces: str | None, time_: int, nonce: str) -> bool:
    """The same rule as the SQL: newer time, or the same time with a nonce not seen yet."""
    if hb_time is None or time_ > hb_time:
        return True
    if time_ < hb_time:
        return False
    seen = hb_nonces or ""
    return nonce not in seen.split() and len(seen) < NONCES_CAP


def audit_rolled_back(
    stored: tuple[int | None, str | None], reported: tuple[int, str] | None
) -> bool:
    """A reported head that does not extend the stored one: fewer records, or other ones."""
    seq, digest = stored
    if seq is None:
        return False
    if reported is None:
        return True
    return reported[0] < seq or (reported[0] == seq and reported[1] != digest)


_ACTIVE_KEY = (
    "SELECT kid, private_sealed FROM signing_keys WHERE vendor_id = :vendor AND active = :yes"
    " ORDER BY created_at DESC LIMIT 1"
)


class PlainSQL:
    """Driver connections for the hot path: no pool checkout, no result objects.

    An ORM session costs ~7 ms of CPU per heartbeat and even SQLAlchemy Core
    adds ~1 ms (pool checkout, transaction and result bookkeeping, profiled);
    the driver's own ``execute`` on a connection kept per thread costs tens
    of microseconds. Reads run in autocommit mode (no transaction to begin);
    writes say BEGIN and COMMIT themselves.
    """

    def __init__(self, engine: Engine) -> None:
        self.dialect = engine.dialect.name
        self._url = engine.url
        self._local = threading.local()

    def sql(self, statement: str) -> str:
        """Named parameters as the driver spells them (``:name`` or ``%(name)s``)."""
        if self.dialect == "postgresql":
            return re.sub(r":(\w+)", r"%(\1)s", statement)
        return statement

    def connect(self) -> Any:
        if self.dialect == "sqlite":
            import sqlite3

            conn = sqlite3.connect(
                self._url.database or "",
                timeout=30,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            return conn
        import psycopg

        url = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(url, autocommit=True)

    def reader(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.connect()
        return conn

    def drop_reader(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def write_many(
        self,
        conn: Any,
        statement: str,
        rows: list[dict[str, Any]],
        events: list[list[dict[str, Any]]] | None = None,
    ) -> list[bool]:
        """One transaction, committed before this returns; per row, whether it applied.

        ``statement`` ends in ``RETURNING``: a row that returns nothing did
        not match its ``WHERE`` (a stale heartbeat). ``events[i]`` are the
        ``device_events`` rows of row ``i``, inserted in the same transaction
        only when row ``i`` applied (a stale beat's records are not taken).
        """
        insert = self.sql(event_statement(self.dialect))
        if self.dialect == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            try:
                applied = [conn.execute(statement, row).fetchone() is not None for row in rows]
                taken = _taken(applied, events)
                if taken:
                    conn.executemany(insert, taken)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return applied
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(statement, rows, returning=True)
            applied = []
            while True:
                applied.append(cur.fetchone() is not None)
                if not cur.nextset():
                    break
            taken = _taken(applied, events)
            if taken:
                cur.executemany(insert, taken)
        return applied


def _taken(applied: list[bool], events: list[list[dict[str, Any]]] | None) -> list[dict[str, Any]]:
    if not events:
        return []
    return [row for ok, rows in zip(applied, events, strict=True) if ok for row in rows]


class GroupCommitter:
    """Batches heartbeat writes: one transaction per batch, callers wait for its commit.

    No timer: the writer takes whatever queued up while the previous commit
    ran (up to ``max_batch``), so a lone heartbeat commits at once and a
    crowd shares commits. A failed batch fails every request in it (503),
    and none of them is acknowledged.
    """

    def __init__(self, plain: PlainSQL, *, max_batch: int = 2000) -> None:
        self._plain = plain
        self._statement = plain.sql(record_statement(plain.dialect))
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[
            tuple[dict[str, Any], list[dict[str, Any]], Future[bool]]
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0
        self.writes = 0

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="modelseal-group-commit", daemon=True
                )
                self._thread.start()

    def submit(
        self,
        params: dict[str, Any],
        events: list[dict[str, Any]] | None = None,
        *,
        timeout: float = 30.0,
    ) -> bool:
        """Whether the write applied (False: a stale heartbeat), once its batch committed."""
        self._ensure_started()
        done: Future[bool] = Future()
        self._queue.put((params, events or [], done))
        try:
            return done.result(timeout)
        except TimeoutError:
            # the database is locked or slow: a 503 the device retries, never a
            # 500 (the write may still land later; a heartbeat is idempotent)
            raise ServerUnavailableError(
                f"heartbeat not recorded within {timeout:g} s: the database is busy"
            ) from None

    def _run(self) -> None:
        conn: Any = None
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if conn is None:
                    conn = self._plain.connect()
                events = [rows for _, rows, _ in batch]
                rows = [params for params, _, _ in batch]
                applied = (
                    self._plain.write_many(conn, self._statement, rows, events)
                    if any(events)
                    else self._plain.write_many(conn, self._statement, rows)
                )
            except Exception as exc:  # the database is down: fail the batch, keep serving
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
                error = ServerUnavailableError(f"heartbeat not recorded: {type(exc).__name__}")
                for _, _, done in batch:
                    done.set_exception(error)
            else:
                self.batches += 1
                self.writes += len(batch)
                for (_, _, done), ok in zip(batch, applied, strict=True):
                    done.set_result(ok)


class HeartbeatService:
    def __init__(
        self,
        engine: Engine,
        box: SecretBox,
        sessions: sessionmaker[Session],
        *,
        group_commit: bool = True,
    ) -> None:
        self._plain = PlainSQL(engine)
        self._lookup = self._plain.sql(_LOOKUP)
        self._record = self._plain.sql(record_statement(self._plain.dialect))
        self._active_key = self._plain.sql(_ACTIVE_KEY)
        self._box = box
        self._sessions = sessions
        self._committer = GroupCommitter(self._plain) if group_commit else None
        self._credentials: dict[tuple[str, str], bytes] = {}
        self._keys: dict[str, tuple[float, PrivateKey]] = {}
        self._lock = threading.Lock()

    def _credential(self, device_row_id: str, sealed: str) -> bytes:
        cache_key = (device_row_id, sealed[-16:])  # re-activation replaces the credential
        found = self._credentials.get(cache_key)
        if found is None:
            found = self._box.open(sealed, purpose="device_credential", row=device_row_id)
            with self._lock:
                if len(self._credentials) > 100_000:
                    self._credentials.clear()
                self._credentials[cache_key] = found
        return found

    def _signing_key(self, conn: Any, vendor_id: str) -> PrivateKey:
        cached = self._keys.get(vendor_id)
        if cached is not None and time.monotonic() - cached[0] < 10:
            return cached[1]
        kid, sealed = conn.execute(self._active_key, {"vendor": vendor_id, "yes": True}).fetchone()
        key = unseal_signing_key(self._box, kid, sealed)
        self._keys[vendor_id] = (time.monotonic(), key)
        return key

    def handle(self, body: bytes, authorization: str | None) -> str:
        """Returns the signed reply; raises 4xx errors for requests it cannot attribute."""
        try:
            request = HeartbeatRequest.from_body(body)
        except LicenseFormatError as exc:
            raise InvalidRequestError(str(exc)) from None
        now = int(time.time())
        try:
            conn = self._plain.reader()
            rows = conn.execute(
                self._lookup, {"lic": request.license_id, "dev": request.device_id}
            ).fetchall()
            match = None
            for row in rows:
                if check_mac(self._credential(row[0], row[2]), body, authorization):
                    match = row
                    break
            if match is None:
                # unknown device or wrong credential: nothing to sign for. (So the
                # server never sends FINGERPRINT_MISMATCH: signing a verdict for an
                # unauthenticated request would let whoever relays a genuine
                # device's nonce fetch a reply that locks it.)
                raise UnauthorizedError("heartbeat not authenticated for this device")
            device_row_id, device_status, _, token_exp, lic_status, expires_at = match[:6]
            vendor_id, interval, vendor_name = match[6], match[7], match[8]
            hb_time, hb_nonces, flag, audit_seq, audit_hash = match[9:14]
            max_calls, calls_leased, lease_end, _, seats_left = match[14:19]
            events_seq, events_hash = match[19:21]
            key = self._signing_key(conn, vendor_id)
        except (UnauthorizedError, InvalidRequestError):
            raise
        except Exception as exc:  # a dropped database connection: reconnect next time
            self._plain.drop_reader()
            raise ServerUnavailableError(f"database unavailable: {type(exc).__name__}") from None
        if not is_fresh(hb_time, hb_nonces, request.time, request.nonce):
            raise StaleRequestError(
                "heartbeat is not newer than the last one from this device (replayed?)"
            )
        new_flag = None
        # only a strictly newer beat can prove a rollback: two processes of one
        # device beating within the same second may report heads out of order
        if (
            flag is None
            and (hb_time is None or request.time > hb_time)
            and audit_rolled_back((audit_seq, audit_hash), request.audit_head)
        ):
            new_flag = "audit_rollback"
        # the shipped chain: where the server's copy ends, and what this beat adds
        stored_head = (audit_seq, audit_hash) if audit_seq is not None else None
        anchor = (
            (int(events_seq), str(events_hash))
            if events_seq is not None and events_hash is not None
            else initial_anchor((audit_seq, audit_hash))
        )
        shipped = check_shipped(anchor, request.audit_records, (stored_head, request.audit_head))
        if shipped.problem is not None and flag is None and new_flag is None:
            new_flag = "audit_chain_break"
        flag = flag or new_flag
        if lic_status == "revoked" or device_status == "deactivated":
            code, message = (
                "REVOKED",
                ("the license was revoked" if lic_status == "revoked" else "device deactivated"),
            )
        elif lic_status == "suspended" or device_status == "suspended":
            code = "SUSPENDED"
            message = f"the {'license' if lic_status == 'suspended' else 'device'} is suspended"
        elif expires_at is not None and expires_at <= now:
            code, message = "EXPIRED", "the license has expired"
        elif flag is not None:
            code = "AUDIT_ROLLBACK"
            message = (
                "the device's audit log no longer continues the records it shipped"
                if flag == "audit_chain_break"
                else "the device's audit log went back"
            ) + "; the vendor must clear the flag"
        elif seats_left is not None and seats_left <= 0:
            code, message = "TOO_MANY_DEVICES", "the license has more devices than its plan allows"
        elif (
            max_calls is not None
            and not request.lease
            and calls_leased >= max_calls
            and request.calls_used >= lease_end
        ):
            code, message = "QUOTA_EXCEEDED", f"all {max_calls} calls of the license are used"
        else:
            code, message = "VALID", ""
        record = {
            "now": now,
            "calls": request.calls_used,
            "seq": request.audit_head[0] if request.audit_head else None,
            "hash": request.audit_head[1] if request.audit_head else None,
            "flag": new_flag,
            "time": request.time,
            "nonce": request.nonce,
            "id": device_row_id,
            "eseq": shipped.anchor[0],
            "ehash": shipped.anchor[1],
        }
        events = event_rows(
            shipped.kept,
            vendor=vendor_id,
            license_id=request.license_id,
            device=device_row_id,
            now=now,
        )
        lease = None
        if code == "VALID" and request.lease and max_calls is not None:
            try:
                code, message, lease = self._lease(device_row_id, request, record, interval, events)
            except StaleRequestError:
                raise
            except Exception as exc:  # the database went away mid-lease: nothing granted
                raise ServerUnavailableError(f"lease not recorded: {type(exc).__name__}") from None
        else:
            if self._committer is not None:
                applied = self._committer.submit(record, events)
            else:
                try:
                    applied = self._plain.write_many(
                        self._plain.reader(), self._record, [record], [events] if events else None
                    )[0]
                except Exception as exc:
                    self._plain.drop_reader()
                    raise ServerUnavailableError(
                        f"heartbeat not recorded: {type(exc).__name__}"
                    ) from None
            if not applied:
                # a copy of this request won the race to the database
                raise StaleRequestError("a heartbeat with this time and nonce was already recorded")
        renewed = None
        if code == "VALID" and token_exp != expires_at:
            renewed = self._renewal(device_row_id)
        verdict = HeartbeatVerdict(
            code=code,
            server_time=now,
            license_id=request.license_id,
            device_id=request.device_id,
            nonce=request.nonce,
            message=message,
            interval=interval,
            license_token=renewed,
            lease=lease,
            audit_ack=shipped.anchor[0],
        )
        return sign_reply(verdict, key, issuer=vendor_name)

    def _lease(
        self,
        device_row_id: str,
        request: HeartbeatRequest,
        record: dict[str, Any],
        interval: int | None,
        events: list[dict[str, Any]],
    ) -> tuple[str, str, Lease | None]:
        """Record the beat and grant a lease in one transaction that locks the license.

        Calls the device spent beyond its leases (its offline allowance) are
        charged to the ledger first; then it gets at most what is left of the
        quota. Rare by design (one per lease, not per beat), so the ORM is fine.
        """
        with self._sessions() as session, session.begin():
            # the ledger moves (calls leased): audited, in the device's name
            audit.bind(session, actor={"kind": "device", "id": device_row_id})
            postgres = session.get_bind().dialect.name == "postgresql"
            lic_q = select(License).where(License.id == request.license_id)
            dev_q = select(Device).where(Device.id == device_row_id)
            if postgres:
                lic_q, dev_q = lic_q.with_for_update(), dev_q.with_for_update()
            lic = session.execute(lic_q).scalar_one()
            device = session.execute(dev_q).scalar_one()
            if not is_fresh(device.hb_time, device.hb_nonces, request.time, request.nonce):
                raise StaleRequestError("a heartbeat with this time and nonce was already recorded")
            plan = session.get(Plan, lic.plan_id)
            assert plan is not None
            assert plan.max_calls is not None
            device.last_seen = record["now"]
            device.calls_used = max(device.calls_used, request.calls_used)
            head = request.audit_head
            if head is not None and (device.audit_seq is None or head[0] > device.audit_seq):
                device.audit_seq, device.audit_hash = head
            if device.events_seq is None or record["eseq"] > device.events_seq:
                device.events_seq, device.events_hash = record["eseq"], record["ehash"]
            if events:
                session.execute(text(event_statement(self._plain.dialect)), events)
            device.hb_nonces = (
                f"{device.hb_nonces} {request.nonce}"
                if device.hb_time == request.time
                else request.nonce
            )
            device.hb_time = request.time
            if request.calls_used > device.lease_end:
                # spent beyond its leases while offline: that is usage too
                lic.calls_leased += request.calls_used - device.lease_end
                device.lease_end = request.calls_used
            grant = min(request.lease, plan.max_calls - lic.calls_leased, MAX_LEASE)
            if grant <= 0:
                return "QUOTA_EXCEEDED", f"all {plan.max_calls} calls of the license are used", None
            start = device.lease_end
            device.lease_end = start + grant
            lic.calls_leased += grant
            ttl = max(3 * (interval or 3600), plan.grace_seconds or 0, 3600)
            device.lease_exp = record["now"] + ttl
            return "VALID", "", Lease(start=start, end=device.lease_end, exp=device.lease_exp)

    def _renewal(self, device_row_id: str) -> str | None:
        """Rare: the license's exp moved (renewal). Uses the ORM; committed before replying."""
        with self._sessions() as session, session.begin():
            device = session.get(Device, device_row_id)
            assert device is not None
            lic = session.get(License, device.license_id)
            assert lic is not None
            return licensing.renewed_token(session, self._box, lic, device)


def heartbeat_reply(service: HeartbeatService, body: bytes, authorization: str | None) -> bytes:
    """The HTTP answer to one heartbeat: ``{"reply": JWS}`` (a JWS needs no escaping)."""
    return b'{"reply":"' + service.handle(body, authorization).encode() + b'"}'
