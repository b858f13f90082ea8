"""ORM models of the Licensing area. Every row below ``Vendor`` carries its
``vendor_id``: each service query filters on it, so one vendor never reads
or changes another's data (tested over every API operation).

Secrets are stored sealed (``*_sealed`` columns, see ``secretbox``); license
keys and API tokens only as keyed or plain hashes (plus, for license keys,
a sealed copy the vendor can show the customer again).
"""

from __future__ import annotations

import secrets
import time

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def now_s() -> int:
    return int(time.time())


class Base(DeclarativeBase):
    pass


class Vendor(Base):
    __tablename__ = "vendors"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class SigningKey(Base):
    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    kty: Mapped[str] = mapped_column(String(16))
    alg: Mapped[str] = mapped_column(String(16))
    private_sealed: Mapped[str] = mapped_column(Text)
    public_pem: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: a personal token acts as this user (issue #12); None: a service token
    user_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class Plan(Base):
    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("vendor_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    features: Mapped[list[str]] = mapped_column(JSON, default=list)
    max_calls: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_devices: Mapped[int | None] = mapped_column(Integer, nullable=True)
    grace_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat_interval: Mapped[int | None] = mapped_column(Integer, nullable=True)
    threshold: Mapped[int | None] = mapped_column(Integer, nullable=True)
    strict_binding: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_vm: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_container: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    #: calls a device may spend beyond its leases while it cannot reach the server
    #: (the license's ``limits.offline_calls``); None: the server's default
    offline_calls: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: self-service device replacements per ``replacement_days`` (None: no limit, 0: none)
    replacements: Mapped[int | None] = mapped_column(Integer, nullable=True, default=2)
    replacement_days: Mapped[int] = mapped_column(Integer, default=90)


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (UniqueConstraint("vendor_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("vendor_id", "model_id", "key_id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    model_id: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    framework: Mapped[str | None] = mapped_column(String(32), nullable=True)
    content_key_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class License(Base):
    __tablename__ = "licenses"
    __table_args__ = (UniqueConstraint("vendor_id", "idempotency_key"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    model_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_sealed: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="active")
    starts_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    #: the usage ledger: calls leased to (or reported beyond leases by) all its devices
    calls_leased: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (Index("ix_devices_license_device", "license_id", "device_id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    license_id: Mapped[str] = mapped_column(ForeignKey("licenses.id"), index=True)
    #: the binding's device id (claims.device.device_id): what heartbeats name
    device_id: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200))
    #: [[kind, digest, weight], ...] under the license key's salt: re-activation matching
    components: Mapped[list[list[object]]] = mapped_column(JSON)
    threshold: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="active")
    credential_sealed: Mapped[str] = mapped_column(Text)
    unlock_seed_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    token: Mapped[str] = mapped_column(Text)
    #: the ``exp`` of ``token``: the heartbeat path compares it with the license's
    token_exp: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    activated_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    last_seen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    calls_used: Mapped[int] = mapped_column(BigInteger, default=0)
    audit_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    audit_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: freshness: the device time of the newest accepted heartbeat, and the
    #: nonces accepted at that time (space-separated); older or repeated is a replay
    hb_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    hb_nonces: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: why the server distrusts this device (``audit_rollback``, ``usage_rollback``);
    #: set by the heartbeat path, cleared by the vendor (``devices clear-flag``)
    flag: Mapped[str | None] = mapped_column(String(32), nullable=True)
    flagged_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: the device's call counter may run up to here on leases (docs/controlplane.md)
    lease_end: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    lease_exp: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: the end of the device audit chain the server holds records of (shipped by
    #: heartbeats, guard/shipping.py): the ``ack`` of each reply
    events_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    events_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


# --- people, sessions, the server audit log, unlock codes (issue #12) -------------------


class User(Base):
    """A person of a vendor: same roles as API tokens, argon2 password, TOTP second factor."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("vendor_id", "username"),
        UniqueConstraint("vendor_id", "username_key", name="uq_users_vendor_id_username_key"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    username: Mapped[str] = mapped_column(String(200))
    #: SHA-256 (hex) of ``username`` after NFKC and casefolding: ``alice``, ``Alice``
    #: and ``ａｌｉｃｅ`` are one name to a reader of the audit log, so the database
    #: refuses the second of them even when two creations race (a check in Python
    #: alone lets both in). Hashed because NFKC can make a name 18 x longer.
    username_key: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)
    #: sealed TOTP secret; set at enrolment, trusted only once ``totp_enabled``
    totp_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the last TOTP time step accepted: a code is good once (replay protection)
    totp_last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    disabled_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class UserSession(Base):
    """A browser session; the cookie carries its id and a secret, signed (services/people)."""

    __tablename__ = "user_sessions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    #: the user passed the second factor in this session (else only enrolment is allowed)
    mfa: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditEvent(Base):
    """One record of a vendor's hash-chained server audit log (services/audit.py)."""

    __tablename__ = "audit_events"
    __table_args__ = (UniqueConstraint("vendor_id", "seq"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict[str, object]] = mapped_column(JSON)
    prev: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class UnlockIssue(Base):
    """An emergency unlock code issued for a device: who, why, which serial (single use)."""

    __tablename__ = "unlock_issues"
    __table_args__ = (UniqueConstraint("device_id", "serial"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    serial: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class WebhookEndpoint(Base):
    """Where a vendor wants events: a URL, the event types, a signing secret (sealed)."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    disabled_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: a delivery worker holds the endpoint until then (one worker per endpoint: order)
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)


class WebhookMessage(Base):
    """The durable outbox: one row per (event, endpoint), written with the change itself."""

    __tablename__ = "webhook_messages"
    __table_args__ = (Index("ix_webhook_messages_due", "endpoint_id", "status", "id"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    msg_id: Mapped[str] = mapped_column(String(40), unique=True)
    event: Mapped[str] = mapped_column(String(64))
    #: events of one license are delivered in order; others do not wait for each other
    license_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class WebhookAttempt(Base):
    """The delivery log: every try, its answer or error, how long it took."""

    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("webhook_messages.id"), index=True)
    at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class SeatRelease(Base):
    """A device the customer released with the license key (self-service replacement)."""

    __tablename__ = "seat_releases"
    __table_args__ = (Index("ix_seat_releases_license_at", "license_id", "released_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    license_id: Mapped[str] = mapped_column(ForeignKey("licenses.id"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    released_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class WebhookMark(Base):
    """A scheduled event already queued (license.expiring, heartbeat.missed, usage.quota_near):
    the unique key makes each one fire once per occasion, whichever process scans."""

    __tablename__ = "webhook_marks"
    __table_args__ = (UniqueConstraint("vendor_id", "event", "subject", "occasion"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"))
    event: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(64))
    occasion: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class DeviceEvent(Base):
    """A record of a device's audit log the device shipped and the server keeps.

    Refusals with their reason code, warnings, unlocks (guard/shipping.py,
    ``kept``); the chain they came in was checked against what the server
    already held. Unique per device, ``seq`` and ``hash``: a batch sent twice
    is stored once, while a new chain after ``devices clear-flag`` (a
    reinstalled device reusing seq numbers) is a different record.
    """

    __tablename__ = "device_events"
    __table_args__ = (
        UniqueConstraint("device_id", "seq", "hash"),
        Index("ix_device_events_vendor_at", "vendor_id", "at"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"))
    license_id: Mapped[str] = mapped_column(ForeignKey("licenses.id"), index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    #: the record's own time (the device's clock), as written and in Unix seconds
    ts: Mapped[str] = mapped_column(String(40))
    at: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data: Mapped[dict[str, object]] = mapped_column(JSON)
    hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


# The Platform area's rows share this metadata (migrations and the schema check see them).
from modelseal.controlplane.platform import models as _platform_models  # noqa: E402,F401
