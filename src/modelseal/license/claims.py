"""The license claims (docs/license.md): what a vendor grants, to whom, where.

Strict: unknown members are refused, so a claim the verifier does not
understand can never be silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Plan = Literal["trial", "subscription", "perpetual"]

# Bounds on every value, checked when a license is issued and when one is
# verified: a 100,000-character customer name once issued fine and then broke
# the device's audit log (records are at most 64 KiB). Names are shown to
# people and written to the audit log on every verification; keep them short.
MAX_NAME = 256  # iss, sub, each aud entry
MAX_FEATURE = 64  # each entitlement
MAX_LIST = 256  # aud and entitlements entries
MAX_URL = 2048
#: Seconds since the epoch up to the end of year 9999: what datetime can show.
MAX_TIME = 253_402_300_799
MAX_CALLS = 2**53  # exact in JSON numbers
MAX_DEVICES = 1_000_000
MAX_INTERVAL = 31 * 86400  # heartbeat interval: a month
MAX_GRACE = 10 * 366 * 86400  # offline grace: ten years

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Feature = Annotated[str, Field(min_length=1, max_length=MAX_FEATURE)]
Timestamp = Annotated[int, Field(ge=0, le=MAX_TIME)]

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
    calls: int | None = Field(default=None, ge=1, le=MAX_CALLS)
    devices: int | None = Field(default=None, ge=1, le=MAX_DEVICES)
    #: With a heartbeat URL: the server's ledger counts calls and the device
    #: spends leases it obtains by heartbeat; beyond them, at most this many
    #: calls while it cannot reach the server (docs/controlplane.md, "Leases").
    #: Absent (older licenses): the device counts ``calls`` locally, as before.
    offline_calls: int | None = Field(default=None, ge=0, le=MAX_CALLS)


class Heartbeat(_Strict):
    url: str = Field(min_length=1, max_length=MAX_URL)
    interval: int = Field(ge=10, le=MAX_INTERVAL, description="seconds between heartbeats")


class LicenseClaims(_Strict):
    iss: Name
    sub: Name = Field(description="the customer")
    aud: tuple[Name, ...] = Field(
        min_length=1, max_length=MAX_LIST, description="licensed model / product ids"
    )
    jti: str = Field(min_length=8, max_length=128)
    iat: Timestamp
    nbf: Timestamp
    exp: Timestamp | None = None  # None only for perpetual licenses
    plan: Plan = "subscription"
    entitlements: tuple[Feature, ...] = Field(default=(), max_length=MAX_LIST)
    limits: Limits = Limits()
    grace: int | None = Field(
        default=None, ge=0, le=MAX_GRACE, description="offline grace, seconds"
    )
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
