"""Request and response bodies of the API (pydantic, strict: unknown fields refused)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["owner", "issuer", "auditor"]
PlanKind = Literal["trial", "subscription", "perpetual"]
#: names end up in licenses (iss, sub) and tables: no control characters (NUL
#: cannot even be stored in PostgreSQL text; found by schemathesis)
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Name = Field(min_length=1, max_length=200, pattern=PRINTABLE)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class VendorOut(BaseModel):
    id: str
    name: str
    role: Role


class TokenCreate(_In):
    name: str = Name
    role: Role = "issuer"


class TokenOut(BaseModel):
    id: str
    name: str
    role: Role
    created_at: int
    revoked_at: int | None = None


class TokenCreated(TokenOut):
    token: str = Field(description="shown once; only its hash is stored")


class KeyOut(BaseModel):
    kid: str
    kty: str
    alg: str
    active: bool
    created_at: int
    public_pem: str


class PlanCreate(_In):
    name: str = Name
    kind: PlanKind = "subscription"
    days: int | None = Field(default=None, ge=1, le=36500)
    features: list[str] = Field(default_factory=list, max_length=100)
    max_calls: int | None = Field(default=None, ge=1, le=2**53)
    max_devices: int | None = Field(default=None, ge=1, le=1_000_000)
    grace_seconds: int | None = Field(default=None, ge=0, le=10 * 365 * 86400)
    heartbeat_interval: int | None = Field(default=3600, ge=10, le=30 * 86400)
    threshold: int | None = Field(default=None, ge=1, le=255)
    strict_binding: bool = False
    allow_vm: bool = True
    allow_container: bool = True
    offline_calls: int | None = Field(
        default=None,
        ge=0,
        le=2**53,
        description="calls a device may spend beyond its leases while offline"
        " (default: min(max_calls, 100)); only with max_calls and a heartbeat",
    )
    replacements: int | None = Field(
        default=2, ge=0, le=1000, description="self-service device replacements per period"
    )
    replacement_days: int = Field(default=90, ge=1, le=3650)


class PlanLimitsIn(_In):
    """What may change on a plan in use: its device limit (issued licenses keep the rest)."""

    max_devices: int | None = Field(
        ge=1,
        le=1_000_000,
        description="devices per license; null: unlimited. Devices past a lowered limit"
        " (the newest seats) hear TOO_MANY_DEVICES and lock",
    )


class PlanOut(BaseModel):
    id: str
    name: str
    kind: PlanKind
    days: int | None
    features: list[str]
    max_calls: int | None
    max_devices: int | None
    grace_seconds: int | None
    heartbeat_interval: int | None
    threshold: int | None
    strict_binding: bool
    allow_vm: bool
    allow_container: bool
    created_at: int
    offline_calls: int | None = None
    replacements: int | None = None
    replacement_days: int = 90


class CustomerCreate(_In):
    name: str = Name


class CustomerOut(BaseModel):
    id: str
    name: str
    created_at: int


class LicenseUsage(BaseModel):
    license_id: str
    max_calls: int | None
    calls_leased: int = Field(description="the ledger: calls leased to devices or spent beyond")
    calls_used: int = Field(description="calls the devices reported spent")
    devices: int


class UsageOut(BaseModel):
    customer_id: str
    licenses: int
    devices: int
    calls_used: int
    calls_leased: int = 0
    by_license: list[LicenseUsage] = Field(default_factory=list)


class ModelCreate(_In):
    model_id: str = Name
    key_id: str = Field(min_length=1, max_length=64, pattern=PRINTABLE)
    content_key: str = Field(min_length=1, max_length=100, description="base64url, 32 bytes")
    name: str | None = Field(default=None, max_length=200, pattern=PRINTABLE)
    framework: str | None = Field(default=None, max_length=32, pattern=PRINTABLE)


class ModelOut(BaseModel):
    id: str
    model_id: str
    key_id: str
    name: str
    framework: str | None
    created_at: int


class OrderCreate(_In):
    customer: str = Field(min_length=1, max_length=200, description="customer id or name")
    plan: str = Field(min_length=1, max_length=200, description="plan id or name")
    models: list[str] = Field(min_length=1, max_length=50, description="model ids (mdl_...)")


class LicenseOut(BaseModel):
    id: str
    customer_id: str
    plan_id: str
    models: list[str]
    status: Literal["active", "suspended", "revoked"]
    starts_at: int
    expires_at: int | None
    created_at: int
    devices: int
    calls_leased: int = 0


class OrderOut(LicenseOut):
    license_key: str = Field(description="what the customer types to activate")


class LicenseKeyOut(BaseModel):
    license_id: str
    license_key: str


class RenewIn(_In):
    days: int = Field(ge=1, le=36500)


class DeviceOut(BaseModel):
    id: str
    license_id: str
    device_id: str
    label: str
    status: Literal["active", "suspended", "deactivated"]
    activated_at: int
    last_seen: int | None
    calls_used: int
    lease_end: int = 0
    flag: str | None = Field(
        default=None, description="why the server distrusts it: audit_rollback, usage_rollback"
    )
    flagged_at: int | None = None


class ActivationIn(_In):
    license_key: str = Field(min_length=1, max_length=64)
    request: dict[str, Any] = Field(description="the device's activation request (docs/device.md)")


class OfflineActivationIn(_In):
    request: dict[str, Any]


class ActivationOut(BaseModel):
    license_id: str
    device: str = Field(description="the device record's id (dev_...)")
    device_id: str
    license: str = Field(description="the device-bound license (compact JWS)")
    reactivated: bool
    warnings: list[str] = Field(default_factory=list)


class HeartbeatOut(BaseModel):
    reply: str = Field(description="compact JWS, typ modelseal-heartbeat+jwt")


class HealthOut(BaseModel):
    status: str
    schema_revision: str | None = None


# --- people, sessions, audit, unlock codes (issue #12) ------------------------------------

Username = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x20\x7f]+$")
Password = Field(min_length=1, max_length=1024, pattern=PRINTABLE)
TotpCode = Field(min_length=6, max_length=6, pattern=r"^[0-9]{6}$")


class UserCreate(_In):
    username: str = Username
    role: Role = "issuer"
    password: str | None = Field(
        default=None, min_length=12, max_length=1024, description="omit: one is generated"
    )


class UserOut(BaseModel):
    id: str
    username: str
    role: Role
    totp_enabled: bool
    locked_until: int | None = None
    created_at: int
    disabled_at: int | None = None


class UserCreated(UserOut):
    password: str | None = Field(description="the generated password, shown once")


class RoleIn(_In):
    role: Role


class LoginIn(_In):
    vendor: str = Name
    username: str = Username
    password: str = Password
    totp: str | None = Field(default=None, min_length=6, max_length=6, pattern=r"^[0-9]{6}$")
    recovery_code: str | None = Field(default=None, max_length=64, pattern=PRINTABLE)


class SessionOut(BaseModel):
    user: UserOut
    vendor: str
    mfa: bool = Field(description="false: only TOTP enrolment is allowed until it is done")
    csrf_token: str = Field(description="send as X-CSRF-Token with every state-changing request")
    expires_at: int | None = None


class TotpEnrolOut(BaseModel):
    secret: str = Field(description="shown once")
    otpauth_uri: str
    qr_svg: str


class TotpConfirmIn(_In):
    code: str = TotpCode


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str] = Field(description="shown once; each works once")


class PasswordIn(_In):
    old: str = Password
    new: str = Field(min_length=12, max_length=1024, pattern=PRINTABLE)


class AuditRecordOut(BaseModel):
    seq: int
    ts: str
    event: str
    reason: str | None
    data: dict[str, Any]
    prev: str
    hash: str


class AuditVerifyOut(BaseModel):
    ok: bool
    records: int
    head: list[Any] | None
    problem: dict[str, Any] | None


class UnlockIn(_In):
    license: str | None = Field(
        default=None, max_length=200, description="the license the device must belong to"
    )
    reason: str = Field(min_length=3, max_length=1000, pattern=PRINTABLE)
    totp: str = TotpCode


class UnlockOut(BaseModel):
    code: str = Field(description="read it to the device's operator; good once")
    serial: int
    remaining: int
    grant_hours: int
    license_id: str
    device: str
    device_id: str


class WebhookCreate(_In):
    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://[^\x00-\x20\x7f]+$")
    events: list[str] = Field(min_length=1, max_length=32)


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: int
    disabled_at: int | None = None


class WebhookCreated(WebhookOut):
    secret: str = Field(description="whsec_...: verify signatures with it; shown once")


class WebhookMessageOut(BaseModel):
    msg_id: str
    event: str
    license_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: int
    delivered_at: int | None
    last_error: str | None
    payload: dict[str, Any]


class WebhookAttemptOut(BaseModel):
    at: int
    status_code: int | None
    error: str | None
    duration_ms: int


class ReleaseIn(_In):
    license_key: str = Field(min_length=20, max_length=64, pattern=PRINTABLE)
    device: str = Field(
        min_length=1, max_length=200, pattern=PRINTABLE, description="device id or dev_..."
    )


class ReleaseOut(BaseModel):
    license_id: str
    device: str
    device_id: str
    replacements_used: int
    replacements_allowed: int | None
    period_days: int
