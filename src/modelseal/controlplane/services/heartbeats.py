"""The heartbeat path: authenticate the device, decide, record, sign the reply.

This is the server's hottest path (every device, every interval), so it
stays off the ORM: one Core read on a pooled connection, and the write
(last seen, usage, audit head) goes through **group commit**: a writer
thread commits every write queued while the previous commit was in flight,
in one transaction, and each request waits for the commit of its batch
before its reply is signed. So a reply is never sent for a heartbeat that
a crash could lose, and the database sees one commit per batch instead of
one per device (bench/controlplane_load.py measures both).

Signing keys and device credentials are cached per process once unsealed.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from concurrent.futures import Future
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelseal.controlplane.errors import (
    InvalidRequestError,
    ServerUnavailableError,
    UnauthorizedError,
)
from modelseal.controlplane.models import Device, License
from modelseal.controlplane.secretbox import SecretBox
from modelseal.controlplane.services import licensing
from modelseal.controlplane.services.vendors import unseal_signing_key
from modelseal.crypto import PrivateKey
from modelseal.license.errors import LicenseFormatError
from modelseal.license.heartbeat import (
    HeartbeatRequest,
    HeartbeatVerdict,
    check_mac,
    sign_reply,
)

_LOOKUP = (
    "SELECT d.id, d.status, d.credential_sealed, d.token_exp, l.status, l.expires_at,"
    " l.vendor_id, p.heartbeat_interval, v.name"
    " FROM devices d JOIN licenses l ON l.id = d.license_id"
    " JOIN plans p ON p.id = l.plan_id JOIN vendors v ON v.id = l.vendor_id"
    " WHERE d.license_id = :lic AND d.device_id = :dev"
)
_RECORD = (
    "UPDATE devices SET last_seen = :now,"
    " calls_used = CASE WHEN calls_used > :calls THEN calls_used ELSE :calls END,"
    " audit_seq = COALESCE(:seq, audit_seq), audit_hash = COALESCE(:hash, audit_hash)"
    " WHERE id = :id"
)
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

    def write_many(self, conn: Any, statement: str, rows: list[dict[str, Any]]) -> None:
        """One transaction, committed before this returns."""
        if self.dialect == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(statement, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(statement, rows)


class GroupCommitter:
    """Batches heartbeat writes: one transaction per batch, callers wait for its commit.

    No timer: the writer takes whatever queued up while the previous commit
    ran (up to ``max_batch``), so a lone heartbeat commits at once and a
    crowd shares commits. A failed batch fails every request in it (503),
    and none of them is acknowledged.
    """

    def __init__(self, plain: PlainSQL, *, max_batch: int = 2000) -> None:
        self._plain = plain
        self._statement = plain.sql(_RECORD)
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], Future[None]]] = queue.SimpleQueue()
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

    def submit(self, params: dict[str, Any], *, timeout: float = 30.0) -> None:
        self._ensure_started()
        done: Future[None] = Future()
        self._queue.put((params, done))
        try:
            done.result(timeout)
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
                self._plain.write_many(conn, self._statement, [params for params, _ in batch])
            except Exception as exc:  # the database is down: fail the batch, keep serving
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
                error = ServerUnavailableError(f"heartbeat not recorded: {type(exc).__name__}")
                for _, done in batch:
                    done.set_exception(error)
            else:
                self.batches += 1
                self.writes += len(batch)
                for _, done in batch:
                    done.set_result(None)


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
        self._record = self._plain.sql(_RECORD)
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
                # unknown device or wrong credential: nothing to sign for
                raise UnauthorizedError("heartbeat not authenticated for this device")
            device_row_id, device_status, _, token_exp, lic_status, expires_at = match[:6]
            vendor_id, interval, vendor_name = match[6], match[7], match[8]
            key = self._signing_key(conn, vendor_id)
        except (UnauthorizedError, InvalidRequestError):
            raise
        except Exception as exc:  # a dropped database connection: reconnect next time
            self._plain.drop_reader()
            raise ServerUnavailableError(f"database unavailable: {type(exc).__name__}") from None
        if lic_status == "revoked" or device_status != "active":
            code, message = (
                "REVOKED",
                ("the license was revoked" if lic_status == "revoked" else "device deactivated"),
            )
        elif lic_status == "suspended":
            code, message = "SUSPENDED", "the license is suspended"
        elif expires_at is not None and expires_at <= now:
            code, message = "EXPIRED", "the license has expired"
        else:
            code, message = "VALID", ""
        record = {
            "now": now,
            "calls": request.calls_used,
            "seq": request.audit_head[0] if request.audit_head else None,
            "hash": request.audit_head[1] if request.audit_head else None,
            "id": device_row_id,
        }
        if self._committer is not None:
            self._committer.submit(record)
        else:
            try:
                self._plain.write_many(self._plain.reader(), self._record, [record])
            except Exception as exc:
                self._plain.drop_reader()
                raise ServerUnavailableError(
                    f"heartbeat not recorded: {type(exc).__name__}"
                ) from None
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
        )
        return sign_reply(verdict, key, issuer=vendor_name)

    def _renewal(self, device_row_id: str) -> str | None:
        """Rare: the license's exp moved (renewal). Uses the ORM; committed before replying."""
        with self._sessions() as session, session.begin():
            device = session.get(Device, device_row_id)
            assert device is not None
            lic = session.get(License, device.license_id)
            assert lic is not None
            return licensing.renewed_token(session, self._box, lic, device)
