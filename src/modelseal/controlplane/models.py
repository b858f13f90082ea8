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


# The Platform area's rows share this metadata (migrations and the schema check see them).
from modelseal.controlplane.platform import models as _platform_models  # noqa: E402,F401
