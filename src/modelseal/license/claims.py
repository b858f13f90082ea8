"""The license claims (docs/license.md): what a vendor grants, to whom, where.

Strict: unknown members are refused, so a claim the verifier does not
understand can never be silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Plan = Literal["trial", "subscription", "perpetual"]

#: JWS ``typ`` header of every modelseal license (RFC 8725 §3.11 explicit typing).
LICENSE_TYP = "modelseal-license+jwt"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BoundComponent(_Strict):
    """One fingerprint component the license is bound to, as a salted digest."""

    kind: str = Field(min_length=1, max_length=64)
    digest: str = Field(min_length=1, max_length=128)
    weight: int = Field(ge=1, le=100)  # as activation requests allow
    strength: Literal["strong", "weak"]


class DeviceBinding(_Strict):
    """Which device may run the license: k of the weighted components must match."""

    device_id: str
    salt: str  # the activation request's salt, so the device can recompute digests
    threshold: int = Field(ge=1)
    components: tuple[BoundComponent, ...] = Field(min_length=1)
    allow_vm: bool = True
    allow_container: bool = True


class EncryptedShare(_Strict):
    """A Shamir share of the license KEK, encrypted under one component's key."""

    kind: str
    x: int = Field(ge=1, le=255)
    ct: str


class WrappedContentKey(_Strict):
    key_id: str  # the content key's RFC 7638 thumbprint, as in the .mseal header
    model_id: str | None = None
    wrapped: str


class KeyDelivery(_Strict):
    scheme: Literal["shamir-hkdf-aesgcm-v1"] = "shamir-hkdf-aesgcm-v1"
    salt: str
    threshold: int = Field(ge=1)
    shares: tuple[EncryptedShare, ...] = Field(min_length=1)
    content_keys: tuple[WrappedContentKey, ...] = ()
    unlock_secret: str | None = None


class UnlockCodes(_Strict):
    """Hashes of the license's one-time emergency unlock codes (docs/guard-audit-unlock.md).

    Verifiers only: the device checks a code it is given against
    ``verifiers[serial]`` and can mint none; each grants ``hours`` once.
    """

    hours: int = Field(ge=1, le=720)
    verifiers: tuple[
        Annotated[str, Field(min_length=22, max_length=22, pattern=r"^[A-Za-z0-9_-]{22}$")], ...
    ] = Field(min_length=1, max_length=4096)


class Limits(_Strict):
    calls: int | None = Field(default=None, ge=1)
    devices: int | None = Field(default=None, ge=1)


class Heartbeat(_Strict):
    url: str
    interval: int = Field(ge=10, description="seconds between heartbeats")


class LicenseClaims(_Strict):
    iss: str = Field(min_length=1)
    sub: str = Field(min_length=1, description="the customer")
    aud: tuple[str, ...] = Field(min_length=1, description="licensed model / product ids")
    jti: str = Field(min_length=8)
    iat: int
    nbf: int
    exp: int | None = None  # None only for perpetual licenses
    plan: Plan = "subscription"
    entitlements: tuple[str, ...] = ()
    limits: Limits = Limits()
    grace: int | None = Field(default=None, ge=0, description="offline grace, seconds")
    heartbeat: Heartbeat | None = None
    device: DeviceBinding | None = None
    keys: KeyDelivery | None = None
    unlock: UnlockCodes | None = None

    def model_post_init(self, __context: object) -> None:
        if self.exp is None and self.plan != "perpetual":
            raise ValueError("only perpetual licenses may omit exp")
        if self.exp is not None and self.exp <= self.nbf:
            raise ValueError("exp must be after nbf")
        if self.keys is not None and self.device is None:
            raise ValueError("content keys are delivered only to a bound device")
        if self.unlock is not None and self.device is None:
            raise ValueError("unlock codes are bound to a device")
