"""Request and response bodies of the Platform API (strict: unknown fields refused)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelseal.controlplane.schemas import PRINTABLE, Name

DocumentKind = Literal["design", "usage", "test"]
#: free text shown in tables: printable, bounded
Text = Field(default="", max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")
Version = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
Url = Field(default="", max_length=1000, pattern=r"^[^\x00-\x20\x7f]*$")
RouteId = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
KeyName = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- model vendors --------------------------------------------------------------------------


class ModelVendorCreate(_In):
    name: str = Name
    address: str = Text
    phone: str = Field(default="", max_length=64, pattern=r"^[0-9+() .\-]*$")
    business: str = Text


class ModelVendorOut(_Out):
    id: str
    name: str
    address: str
    phone: str
    business: str
    created_at: int


# --- models and versions ------------------------------------------------------------------


class VersionCreate(_In):
    version: str = Version
    config_url: str = Url
    image_name: str = Field(default="", max_length=500, pattern=r"^[^\x00-\x20\x7f]*$")
    image_url: str = Url


class ModelCreate(_In):
    vendor: str = Field(min_length=1, max_length=200, description="the model vendor's id or name")
    name: str = Name
    function: str = Text
    language: str = Field(default="", max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")
    version: VersionCreate | None = Field(default=None, description="its first version")


class VersionOut(_Out):
    id: str
    version: str
    config_url: str
    image_name: str
    image_url: str
    created_at: int


class ModelOut(_Out):
    id: str
    vendor_id: str = Field(description="the model vendor (platform vendor) id")
    vendor: str
    name: str
    function: str
    language: str
    created_at: int
    versions: list[VersionOut]


# --- documents -----------------------------------------------------------------------------


class DocumentOut(_Out):
    id: str
    model_id: str
    kind: DocumentKind
    filename: str
    content_type: str
    size: int
    sha256: str
    created_at: int


# --- deployment configs and images ------------------------------------------------------------


class ConfigCreate(_In):
    name: str = Name
    spec: str = Field(min_length=1, max_length=256 * 1024, description="ModelDeployment YAML")
    model: str | None = Field(default=None, max_length=200, description="a registered model")


class ConfigOut(_Out):
    id: str
    name: str
    model_id: str | None
    deployment_name: str
    namespace: str
    image: str
    created_at: int
    spec: str


class ImageCreate(_In):
    name: str = Name
    address: str = Field(min_length=1, max_length=500, pattern=r"^[^\x00-\x20\x7f]+$")
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")


class ImageOut(_Out):
    id: str
    name: str
    address: str
    digest: str | None
    created_at: int


# --- deployments -------------------------------------------------------------------------------


class DeploymentCreate(_In):
    config: str | None = Field(
        default=None, max_length=200, description="a stored config (id or name)"
    )
    spec: str | None = Field(
        default=None, max_length=256 * 1024, description="or a ModelDeployment YAML"
    )
    license: str = Field(
        min_length=1, max_length=256 * 1024, description="the license the spec's license names"
    )
    envelope_key: str | None = Field(
        default=None,
        max_length=16 * 1024,
        description="the gateway's SM2 public key (PEM); default: this platform's gateway key",
    )
    trust: str | None = Field(default=None, max_length=256 * 1024)
    node_ports: list[Annotated[int, Field(ge=1, le=65535)]] | None = Field(
        default=None,
        max_length=16,
        description="NodePorts chosen by number (default: the platform recommends them)",
    )
    decrypt: bool = Field(default=True, description="the route decrypts envelopes")


class DeploymentOut(_Out):
    id: str
    namespace: str
    name: str
    backend: str
    config_id: str | None
    model_name: str
    model_version: str
    node_ports: list[int]
    phase: str
    forward_url: str | None
    route: str | None = None
    created_at: int
    updated_at: int


class DeploymentStatusOut(BaseModel):
    id: str
    namespace: str
    name: str
    backend: str
    phase: str
    replicas: int
    ready_replicas: int
    ready: bool
    node_ports: list[int]
    forward_url: str | None
    restarts: int
    message: str
    details: dict[str, str]


class LogsOut(BaseModel):
    id: str
    logs: str


class NodePortOut(BaseModel):
    port: int
    owner: str


class NodePortsOut(BaseModel):
    range: str
    used: list[NodePortOut]
    recommended: list[int] = Field(description="what a deployment of `count` ports would get now")


# --- gateway routes and API keys --------------------------------------------------------------


class RouteCreate(_In):
    id: str = RouteId
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=PRINTABLE)
    prefix: str = Field(min_length=1, max_length=200)
    forward_url: str = Field(min_length=1, max_length=500)
    strip_prefix: bool = True
    decrypt: bool = True
    timeout_s: float = Field(default=30.0, ge=0.001, le=3600)


class RouteOut(_Out):
    id: str
    name: str
    prefix: str
    forward_url: str
    strip_prefix: bool
    decrypt: bool
    timeout_s: float
    deployment_id: str | None


class ApiKeyCreate(_In):
    name: str = KeyName
    routes: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=100,
        description='route ids or ["*"]',
    )
    rate_limit: str | None = Field(default=None, max_length=32, description="50/s, 600/min, 1000/h")


class ApiKeyOut(_Out):
    id: str
    name: str
    sha256: str
    routes: list[str]
    rate_limit: str | None
    created_at: int
    revoked_at: int | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="shown once; only its SHA-256 is stored")


class GatewayKeyOut(BaseModel):
    kid: str
    public_pem: str
    created_at: int


class GatewayPrivateKeyOut(GatewayKeyOut):
    private_pem: str
