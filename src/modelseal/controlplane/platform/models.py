"""ORM rows of the Platform area (tables ``platform_*``, migration 0004).

Every row but the NodePort records carries ``vendor_id``, the tenant. The
NodePort records are global on purpose: a port is a resource of the
cluster (or the machine), not of a tenant, so two tenants must never be
given the same one.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from modelseal.controlplane.models import Base, now_s


class ModelVendor(Base):
    """A company that delivers model containers to the manager (the patent's vendor record)."""

    __tablename__ = "platform_vendors"
    __table_args__ = (UniqueConstraint("vendor_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(500), default="")
    phone: Mapped[str] = mapped_column(String(64), default="")
    business: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class RegisteredModel(Base):
    __tablename__ = "platform_models"
    __table_args__ = (UniqueConstraint("vendor_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    model_vendor_id: Mapped[str] = mapped_column(ForeignKey("platform_vendors.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    function: Mapped[str] = mapped_column(String(500), default="")
    language: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class ModelVersion(Base):
    __tablename__ = "platform_model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("platform_models.id"), index=True)
    version: Mapped[str] = mapped_column(String(64))
    config_url: Mapped[str] = mapped_column(String(1000), default="")
    image_name: Mapped[str] = mapped_column(String(500), default="")
    image_url: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class Document(Base):
    """A design, usage or test document. The bytes live in ``<data-dir>/blobs/<blob>``,
    ``blob`` a random name chosen here: nothing the uploader sent becomes a path."""

    __tablename__ = "platform_documents"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("platform_models.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class DeploymentConfig(Base):
    """A validated ``ModelDeployment`` spec, stored as the YAML the user sent."""

    __tablename__ = "platform_configs"
    __table_args__ = (UniqueConstraint("vendor_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    model_id: Mapped[str | None] = mapped_column(
        ForeignKey("platform_models.id"), nullable=True, index=True
    )
    spec_yaml: Mapped[str] = mapped_column(Text)
    deployment_name: Mapped[str] = mapped_column(String(63))
    namespace: Mapped[str] = mapped_column(String(63))
    image: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class Image(Base):
    __tablename__ = "platform_images"
    __table_args__ = (UniqueConstraint("vendor_id", "address"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(500))
    digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class NodePortRecord(Base):
    """The patent's used node-port record: one row per reserved port.

    The primary key on ``port`` is the last line of defence against double
    allocation; the available record is the configured range (a setting).
    """

    __tablename__ = "platform_node_ports"
    port: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    reserved_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class DeploymentRecord(Base):
    __tablename__ = "platform_deployments"
    # the backend runs one deployment per namespace/name, whoever asked for it
    __table_args__ = (UniqueConstraint("backend", "namespace", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    backend: Mapped[str] = mapped_column(String(32))
    namespace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(63))
    config_id: Mapped[str | None] = mapped_column(
        ForeignKey("platform_configs.id"), nullable=True, index=True
    )
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(64))
    spec_yaml: Mapped[str] = mapped_column(Text)
    license_sealed: Mapped[str] = mapped_column(Text)
    node_ports: Mapped[list[int]] = mapped_column(JSON, default=list)
    phase: Mapped[str] = mapped_column(String(16), default="Pending")
    forward_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class GatewayRoute(Base):
    """The patent's route record: id, name, access prefix, forward URL."""

    __tablename__ = "platform_routes"
    __table_args__ = (
        UniqueConstraint("vendor_id", "route_id"),
        UniqueConstraint("vendor_id", "prefix"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    route_id: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(200))
    forward_url: Mapped[str] = mapped_column(String(500))
    strip_prefix: Mapped[bool] = mapped_column(Boolean, default=True)
    decrypt: Mapped[bool] = mapped_column(Boolean, default=True)
    timeout_s: Mapped[float] = mapped_column(Float, default=30.0)
    deployment_id: Mapped[str | None] = mapped_column(
        ForeignKey("platform_deployments.id"), nullable=True, index=True
    )
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class GatewayApiKey(Base):
    """A model user's API key: only its SHA-256 is stored (the key is shown once)."""

    __tablename__ = "platform_api_keys"
    __table_args__ = (UniqueConstraint("vendor_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    routes: Mapped[list[str]] = mapped_column(JSON, default=list)
    rate_limit: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class GatewayKey(Base):
    """The gateway's SM2 envelope key pair, private half sealed (one per tenant)."""

    __tablename__ = "platform_gateway_keys"
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), primary_key=True)
    kid: Mapped[str] = mapped_column(String(64))
    private_sealed: Mapped[str] = mapped_column(Text)
    public_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
