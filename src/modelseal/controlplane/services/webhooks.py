"""Webhooks: events to a vendor's endpoints, signed as Standard Webhooks says, from an outbox.

Why an outbox: an event sent by the request that made the change is lost
when the process dies between commit and send, and sent for a change that
then rolls back when it dies the other way. Here the event is a row
(``webhook_messages``) written in the same transaction as the change: the
audit log's ``before_commit`` hands its notes to :func:`enqueue` (one set
of names for both), so a committed change always has its events and a
rolled-back one never does.

Delivery (:class:`DeliveryWorker`, a thread in each server process):
per endpoint, oldest first; a failed message is retried with exponential
back-off (base x 2^(attempt-1), capped, with jitter) and, until it is
delivered, later messages *of the same license* wait behind it (order per
license); other licenses' messages go on. After ``MAX_ATTEMPTS`` a message
is ``failed`` and stops blocking; ``redeliver`` queues it again. An
endpoint is worked by one worker at a time (a lease row), so several
processes or replicas never reorder one endpoint's messages. Every attempt
goes to the delivery log (``webhook_attempts``).

Sending (:func:`send`, red team #12): one POST with a deadline on the
whole request (connect, TLS, headers and body together), not per socket
read, so a receiver that drips a byte at a time is cut off at
``TIMEOUT``. Any failure, HTTP or not (a banner from an SSH or database
port, garbage, a reset), is one counted attempt; endpoints are worked by
a small pool of threads, and an endpoint that fails without an HTTP
answer gets no more tries in that pass, so one slow or broken endpoint
delays others by at most one deadline. The host is resolved at every
send and refused when any address is not public (loopback, private,
link-local, cloud metadata, ...) unless the operator allows it
(``MODELSEAL_WEBHOOK_ALLOW_PRIVATE``); the connection goes to the address
that was checked (no second lookup for DNS rebinding to swap). The
delivery log keeps a coarse category (``connect_failed``, ``timeout``,
``http_5xx``, ...), never the error text or exact status of the target,
so it is no scanner of the server's network.

Signatures (https://www.standardwebhooks.com/): headers ``webhook-id`` (the
message id: receivers de-duplicate on it, delivery is at least once),
``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature: v1,base64(HMAC-SHA256(secret, id "." timestamp "."
body))``; the secret is ``whsec_`` + base64 of 32 random bytes, shown once,
stored sealed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import random
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from modelseal.controlplane.errors import ConflictError, InvalidRequestError, NotFoundError
from modelseal.controlplane.models import (
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    new_id,
    now_s,
)
from modelseal.controlplane.secretbox import SecretBox
from modelseal.controlplane.services import audit
from modelseal.controlplane.services.vendors import Caller

log = logging.getLogger("modelseal.controlplane.webhooks")

#: the events an endpoint can subscribe to (the audit log's names for the same changes)
EVENTS: Final = (
    "license.created",
    "license.renewed",
    "license.revoked",
    "license.suspended",
    "license.reinstated",
    "device.activated",
    "device.deactivated",
    "unlock.issued",
    # scheduled (services/webhook_events.py): found by a scan, not by a request
    "license.expiring",
    "heartbeat.missed",
    "usage.quota_near",
)
MAX_ATTEMPTS: Final = 20
#: seconds for one whole delivery (connect + TLS + request + answer), not per read
TIMEOUT: Final = 10.0
MAX_ERROR: Final = 500
#: endpoints worked at once by one worker: a slow endpoint holds one thread, not all
POOL: Final = 4


# --- endpoints -----------------------------------------------------------------------------


def public_address(address: str) -> bool:
    """True for an address on the public internet: a webhook may go there by default.

    Refused: loopback, RFC 1918 / ULA private, link-local (169.254.169.254, the
    cloud metadata service), CGNAT shared space, multicast, reserved and
    documentation ranges: what ``ipaddress`` calls not ``is_global``. An
    IPv4-mapped IPv6 address is judged as the IPv4 address it maps.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_global) and not ip.is_multicast


def _check_url(url: str, *, allow_private: bool = False) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError("a webhook URL must be http(s)://host/...")
    if parts.username or parts.password:
        raise InvalidRequestError("put no credentials in a webhook URL: verify the signature")
    try:
        parts.port  # noqa: B018 (raises on a port out of range)
    except ValueError:
        raise InvalidRequestError("the webhook URL's port is not valid") from None
    host = parts.hostname
    literal = True
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        literal = False
    # names are resolved (and checked) at each delivery: a name's address can change
    if not allow_private and (
        host == "localhost" or host.endswith(".localhost") or (literal and not public_address(host))
    ):
        raise InvalidRequestError(
            "a webhook URL must point at a public address (the server's operator can allow "
            "private ones: MODELSEAL_WEBHOOK_ALLOW_PRIVATE)"
        )
    return url


def create_endpoint(
    session: Session,
    box: SecretBox,
    caller: Caller,
    *,
    url: str,
    events: Sequence[str],
    allow_private: bool = False,
) -> tuple[WebhookEndpoint, str]:
    unknown = sorted(set(events) - set(EVENTS))
    if unknown or not events:
        raise InvalidRequestError(
            f"unknown events {unknown}; choose from {', '.join(EVENTS)}"
            if unknown
            else "subscribe to at least one event"
        )
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    row = WebhookEndpoint(
        id=new_id("whk"),
        vendor_id=caller.vendor_id,
        url=_check_url(url, allow_private=allow_private),
        events=sorted(set(events)),
        created_at=now_s(),
        lease_until=0.0,
    )
    row.secret_sealed = box.seal(secret.encode(), purpose="webhook_secret", row=row.id)
    session.add(row)
    return row, secret


def list_endpoints(session: Session, caller: Caller) -> list[WebhookEndpoint]:
    return list(
        session.execute(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.vendor_id == caller.vendor_id)
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        ).scalars()
    )


def get_endpoint(session: Session, caller: Caller, ref: str) -> WebhookEndpoint:
    row = session.execute(
        select(WebhookEndpoint).where(
            WebhookEndpoint.vendor_id == caller.vendor_id, WebhookEndpoint.id == ref
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no webhook endpoint {ref!r}")
    return row


def disable_endpoint(session: Session, caller: Caller, ref: str) -> WebhookEndpoint:
    row = get_endpoint(session, caller, ref)
    if row.disabled_at is None:
        row.disabled_at = now_s()
    return row


def messages(
    session: Session, caller: Caller, ref: str, *, limit: int = 100
) -> list[WebhookMessage]:
    endpoint = get_endpoint(session, caller, ref)
    return list(
        session.execute(
            select(WebhookMessage)
            .where(WebhookMessage.endpoint_id == endpoint.id)
            .order_by(WebhookMessage.id.desc())
            .limit(limit)
        ).scalars()
    )


def attempts(session: Session, caller: Caller, ref: str, msg_id: str) -> list[WebhookAttempt]:
    msg = _message(session, caller, ref, msg_id)
    return list(
        session.execute(
            select(WebhookAttempt)
            .where(WebhookAttempt.message_id == msg.id)
            .order_by(WebhookAttempt.id)
        ).scalars()
    )


def _message(session: Session, caller: Caller, ref: str, msg_id: str) -> WebhookMessage:
    endpoint = get_endpoint(session, caller, ref)
    row = session.execute(
        select(WebhookMessage).where(
            WebhookMessage.endpoint_id == endpoint.id, WebhookMessage.msg_id == msg_id
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no message {msg_id!r} for this endpoint")
    return row


def redeliver(session: Session, caller: Caller, ref: str, msg_id: str) -> WebhookMessage:
    """Queue a message again (delivered or failed): same id, so receivers can de-duplicate."""
    row = _message(session, caller, ref, msg_id)
    if row.status == "pending":
        raise ConflictError("the message is still queued")
    row.status = "pending"
    row.next_attempt_at = 0.0
    row.attempts = 0
    audit.note(
        session,
        caller.vendor_id,
        "webhook.redelivery",
        {"target": {"kind": "webhook", "id": ref, "message": msg_id, "event": row.event}},
    )
    return row


# --- the outbox ----------------------------------------------------------------------------------


def _license_of(data: dict[str, Any]) -> str | None:
    target = data.get("target") or {}
    if target.get("kind") == "license":
        return str(target.get("id"))
    lic = target.get("license")
    return None if lic is None else str(lic)


def enqueue(session: Session, notes: Sequence[audit.Note]) -> None:
    """Called in ``before_commit`` with the change's audit notes: same transaction."""
    wanted = [n for n in notes if n.event in EVENTS]
    if not wanted:
        return
    vendors = sorted({n.vendor_id for n in wanted})
    endpoints = list(
        session.execute(
            select(WebhookEndpoint).where(
                WebhookEndpoint.vendor_id.in_(vendors), WebhookEndpoint.disabled_at.is_(None)
            )
        ).scalars()
    )
    if not endpoints:
        return
    now = datetime.now(UTC)
    for n in wanted:
        data = {k: v for k, v in n.data.items() if k not in ("address", "actor")}
        if n.reason is not None:
            data["reason"] = n.reason
        for endpoint in endpoints:
            if endpoint.vendor_id != n.vendor_id or n.event not in endpoint.events:
                continue
            msg_id = new_id("msg")
            body = {
                "type": n.event,
                "timestamp": now.isoformat().replace("+00:00", "Z"),
                "data": data,
            }
            session.add(
                WebhookMessage(
                    vendor_id=n.vendor_id,
                    endpoint_id=endpoint.id,
                    msg_id=msg_id,
                    event=n.event,
                    license_id=_license_of(n.data),
                    payload=json.dumps(body, sort_keys=True, separators=(",", ":")),
                    created_at=now_s(),
                    status="pending",
                    attempts=0,
                    next_attempt_at=0.0,
                )
            )


def install() -> None:
    audit.subscribe(enqueue)


# --- signing and sending -------------------------------------------------------------------------


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class DeliveryRefusedError(Exception):
    """A delivery not attempted: the URL's host resolves to an address that is not allowed."""


def _resolve(host: str, port: int, *, allow_private: bool) -> tuple[int, str]:
    """The address to connect to, checked: every address of the name must be allowed (a
    name with one public and one private address is refused: we would not choose)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError("no address")
    if not allow_private and not all(public_address(str(i[4][0])) for i in infos):
        raise DeliveryRefusedError(host)
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


class _Deadline:
    """Shuts the connection's socket at the deadline: a blocked read returns at once.

    ``timeout`` on a socket bounds one read; a receiver that sends a byte
    just inside it each time keeps a delivery alive for hours (measured: 56 s
    for 14 bytes). A timer that shuts the socket bounds the whole request.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shut()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            self._shut()

    def _shut(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing to cut off
                self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _category(exc: BaseException, deadline: _Deadline | None) -> str:
    """A coarse name for a failure: enough to act on, too little to scan a network with."""
    if (deadline is not None and deadline.expired) or isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, DeliveryRefusedError):
        return "blocked_address"
    if isinstance(exc, socket.gaierror):
        return "dns_failed"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls_failed"
    if isinstance(exc, http.client.HTTPException):
        return "not_http"  # a banner, garbage, a cut-off answer
    if isinstance(exc, ConnectionRefusedError):
        return "connect_failed"
    if isinstance(exc, OSError):
        return "network_error"
    return "error"


def send(
    url: str,
    secret: str,
    msg_id: str,
    body: bytes,
    *,
    timeout: float = TIMEOUT,
    allow_private: bool = False,
) -> tuple[int | None, str | None]:
    """POST once; (status class, error category). 2xx is delivered; anything else is retried.

    Never raises for anything the receiver (or the network) does: each
    attempt is recorded and counted, so a broken endpoint reaches
    ``MAX_ATTEMPTS`` instead of failing the worker's pass for everyone.
    The status is returned as its class (200, 300, 400, 500) and the error
    as a category: the delivery log is not an oracle for internal hosts.
    """
    ts = int(time.time())
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "modelseal-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }
    deadline: _Deadline | None = None
    conn: http.client.HTTPConnection | None = None
    sock: socket.socket | None = None
    try:
        port = parts.port or (443 if https else 80)
        _family, address = _resolve(host, port, allow_private=allow_private)
        deadline = _Deadline(timeout)
        sock = socket.create_connection((address, port), timeout=timeout)
        deadline.watch(sock)
        if https:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            deadline.watch(sock)
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock  # connected to the checked address; Host: names the URL's host
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read(65536)
        status = int(resp.status)
        if deadline.expired:
            return None, "timeout"
        if 200 <= status < 300:
            return 200, None
        return status // 100 * 100, f"http_{status // 100}xx"
    except Exception as exc:  # every failure is one counted attempt (red team #12, finding 1)
        return None, _category(exc, deadline)
    finally:
        if deadline is not None:
            deadline.cancel()
        if conn is not None:
            conn.close()
        if sock is not None:  # a failed TLS handshake leaves no conn to close it
            sock.close()


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Seconds before try ``attempt + 1``: base x 2^(attempt-1), capped, +-20 % jitter."""
    delay = min(base * 2 ** max(attempt - 1, 0), cap)
    return float(delay * random.uniform(0.8, 1.2))  # noqa: S311 (jitter, not a secret)


# --- the worker ---------------------------------------------------------------------------


class DeliveryWorker:
    """Delivers due messages, endpoint by endpoint, until stopped."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        box: SecretBox,
        *,
        poll: float = 1.0,
        retry_base: float = 5.0,
        retry_cap: float = 600.0,
        batch: int = 50,
        scan_every: float = 60.0,
        timeout: float = TIMEOUT,
        allow_private: bool = False,
        pool: int = POOL,
    ) -> None:
        self.sessions = sessions
        self.box = box
        self.poll = poll
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.batch = batch
        self.scan_every = scan_every
        self.timeout = timeout
        self.allow_private = allow_private
        self.pool = pool
        self._next_scan = 0.0
        self.owner = secrets.token_hex(8)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)

    def scan(self) -> int:
        """Queue the scheduled events that are due (license.expiring, ...)."""
        from modelseal.controlplane.services import webhook_events

        with self.sessions() as s, s.begin():
            return webhook_events.scan(s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if time.monotonic() >= self._next_scan:
                    self._next_scan = time.monotonic() + self.scan_every
                    self.scan()
                busy = self.run_once()
            except Exception:  # a database hiccup must not kill delivery for good
                log.exception("webhook delivery pass failed")
                busy = False
            if not busy:
                self._stop.wait(self.poll)

    def _due_endpoints(self) -> list[str]:
        now = time.time()
        with self.sessions() as s:
            rows = s.execute(
                select(WebhookMessage.endpoint_id)
                .where(WebhookMessage.status == "pending", WebhookMessage.next_attempt_at <= now)
                .distinct()
            ).scalars()
            return list(rows)

    def _claim(self, endpoint_id: str) -> WebhookEndpoint | None:
        now = time.time()
        with self.sessions() as s, s.begin():
            result: Any = s.execute(
                update(WebhookEndpoint)
                .where(
                    WebhookEndpoint.id == endpoint_id,
                    WebhookEndpoint.disabled_at.is_(None),
                    (WebhookEndpoint.lease_until < now)
                    | (WebhookEndpoint.lease_owner == self.owner),
                )
                .values(lease_until=now + self._lease, lease_owner=self.owner)
            )
            if result.rowcount != 1:
                return None
            return s.get(WebhookEndpoint, endpoint_id)

    def _release(self, endpoint_id: str) -> None:
        with self.sessions() as s, s.begin():
            s.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.lease_owner == self.owner)
                .values(lease_until=0.0, lease_owner=None)
            )

    @property
    def _lease(self) -> float:
        # longer than any one send (the deadline bounds it), renewed after each attempt
        return 4 * self.timeout

    def run_once(self) -> bool:
        """One pass over the endpoints with due messages; True if anything was attempted.

        Endpoints are worked ``pool`` at a time, each under its own guard: one
        endpoint's failure, of any kind, ends only its own share of the pass.
        """
        due = self._due_endpoints()
        if not due:
            return False
        with ThreadPoolExecutor(max_workers=self.pool, thread_name_prefix="webhooks") as ex:
            return any(list(ex.map(self._work, due)))

    def _work(self, endpoint_id: str) -> bool:
        if self._stop.is_set():
            return False
        try:
            endpoint = self._claim(endpoint_id)
            if endpoint is None:
                return False
            try:
                return self._deliver(endpoint)
            finally:
                self._release(endpoint_id)
        except Exception:  # one endpoint (or a database hiccup) must not end everyone's pass
            log.exception("webhook delivery to endpoint %s failed", endpoint_id)
            return False

    def _deliver(self, endpoint: WebhookEndpoint) -> bool:
        secret = self.box.open(
            endpoint.secret_sealed, purpose="webhook_secret", row=endpoint.id
        ).decode()
        with self.sessions() as s:
            pending = list(
                s.execute(
                    select(WebhookMessage)
                    .where(
                        WebhookMessage.endpoint_id == endpoint.id,
                        WebhookMessage.status == "pending",
                    )
                    .order_by(WebhookMessage.id)
                    .limit(self.batch)
                ).scalars()
            )
        blocked: set[str | None] = set()
        attempted = False
        now = time.time()
        for msg in pending:
            key = msg.license_id
            if key is not None and key in blocked:
                continue  # an earlier message of this license is not delivered yet
            if msg.next_attempt_at > now:
                if key is not None:
                    blocked.add(key)
                continue
            attempted = True
            started = time.monotonic()
            status, error = send(
                endpoint.url,
                secret,
                msg.msg_id,
                msg.payload.encode(),
                timeout=self.timeout,
                allow_private=self.allow_private,
            )
            ok = status is not None and 200 <= status < 300
            self._record(msg.id, endpoint.vendor_id, status, error, started, ok)
            if not ok and key is not None:
                blocked.add(key)
            if status is None or self._stop.is_set():
                # no HTTP answer (down, slow, not HTTP): the rest wait for the next pass, so
                # a dead endpoint costs each pass one deadline, not one per message
                break
        return attempted

    def _record(
        self,
        message_id: int,
        vendor_id: str,
        status: int | None,
        error: str | None,
        started: float,
        ok: bool,
    ) -> None:
        with self.sessions() as s, s.begin():
            msg = s.get(WebhookMessage, message_id)
            if msg is None:
                return
            msg.attempts += 1
            s.add(
                WebhookAttempt(
                    vendor_id=vendor_id,
                    message_id=message_id,
                    at=now_s(),
                    status_code=status,
                    error=error,
                    duration_ms=int((time.monotonic() - started) * 1000),
                )
            )
            # still working on this endpoint: keep the lease (one worker per endpoint)
            s.execute(
                update(WebhookEndpoint)
                .where(
                    WebhookEndpoint.id == msg.endpoint_id,
                    WebhookEndpoint.lease_owner == self.owner,
                )
                .values(lease_until=time.time() + self._lease)
            )
            if ok:
                msg.status = "delivered"
                msg.delivered_at = now_s()
                msg.last_error = None
            elif msg.attempts >= MAX_ATTEMPTS:
                msg.status = "failed"
                msg.last_error = error
            else:
                msg.last_error = error
                msg.next_attempt_at = time.time() + backoff(
                    msg.attempts, base=self.retry_base, cap=self.retry_cap
                )


def start_worker(state: Any) -> DeliveryWorker | None:
    """The app's worker, if this process delivers (``MODELSEAL_WEBHOOK_WORKER``)."""
    settings = state.settings
    if not settings.webhook_worker:
        return None
    worker = DeliveryWorker(
        state.sessions,
        state.box,
        poll=settings.webhook_poll,
        retry_base=settings.webhook_retry_base,
        retry_cap=settings.webhook_retry_cap,
        scan_every=settings.webhook_scan,
        allow_private=settings.webhook_allow_private,
    )
    worker.start()
    return worker
