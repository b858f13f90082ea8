"""Issuing licenses offline: from an activation request to a signed JWS."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from pydantic import ValidationError

from modelseal.crypto import ContentKey, PrivateKey, b64url, b64url_decode
from modelseal.errors import InvalidArgumentError, UnsupportedAlgorithmError
from modelseal.license import jws
from modelseal.license.claims import (
    LICENSE_TYP,
    BoundComponent,
    DeviceBinding,
    LicenseClaims,
    Plan,
    UnlockCodes,
)
from modelseal.license.errors import LicenseError, LicenseFormatError
from modelseal.license.keydelivery import ShareHolder, build
from modelseal.license.unlockcodes import SEED_SIZE, make_verifiers

if TYPE_CHECKING:
    from modelseal.device import ActivationRequest, KindInfo, Strength

#: What a kind missing from the issuer's table counts for: the weakest there is.
UNKNOWN_KIND_STRENGTH: Final[Strength] = "weak"
UNKNOWN_KIND_WEIGHT: Final = 1


@dataclass(frozen=True)
class AssessedComponent:
    """A request component with the strength and weight the *issuer* gives its kind.

    The request's own ``strength`` and ``weight`` are labels the device (that
    is, the customer) wrote; nothing covers them, so relabelling a hostname
    "strong, weight 100" would otherwise pass ``--strict-binding`` and let the
    hostname alone open the license (issue #8, item 4). They are never used.
    """

    kind: str
    digest: str
    secret: str = field(repr=False)
    strength: Strength
    weight: int


def assess_components(
    request: ActivationRequest, kinds: Mapping[str, KindInfo] | None = None
) -> tuple[AssessedComponent, ...]:
    """The request's components, weighed from ``kinds`` (default: the built-in table).

    A kind the table does not know gets the weakest strength and weight: a
    device can invent any kind name, so an unknown one proves nothing.
    """
    from modelseal.device import COMPONENT_KINDS

    table = COMPONENT_KINDS if kinds is None else kinds
    out = []
    for c in request.components:
        info = table.get(c.kind)
        strength: Strength = info.strength if info is not None else UNKNOWN_KIND_STRENGTH
        weight = info.weight if info is not None else UNKNOWN_KIND_WEIGHT
        out.append(
            AssessedComponent(
                kind=c.kind, digest=c.digest, secret=c.secret, strength=strength, weight=weight
            )
        )
    return tuple(out)


class IssueArgumentError(LicenseFormatError, InvalidArgumentError):
    """A value given to :func:`issue_license` is out of range or contradicts another.

    Refused before anything is signed, so no license exists that the device
    would later choke on. A usage error (exit 2) and a ``ValueError``.
    """

    reason = "invalid_argument"
    exit_code = 2


def _field_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "license"
        parts.append(f"{_FIELD_NAMES.get(loc, loc)}: {err.get('msg')}")
    return "; ".join(parts)


#: Claim names as the issuer knows them (CLI options / keyword arguments).
_FIELD_NAMES = {
    "sub": "customer",
    "iss": "issuer",
    "limits.calls": "max_calls",
    "limits.devices": "max_devices",
    "limits.offline_calls": "offline_calls",
    "heartbeat.interval": "heartbeat_interval",
    "heartbeat.url": "heartbeat_url",
    "exp": "validity",
    "nbf": "not_before",
}


class WeakBindingError(LicenseError):
    """Weak components alone (hostname, machine-id, CPU model) could meet the threshold."""

    reason = "weak_binding"
    exit_code = 2


@dataclass(frozen=True)
class IssuedLicense:
    token: str
    claims: LicenseClaims
    warnings: tuple[str, ...] = field(default=())
    #: The seed of the license's unlock codes, for the vendor's records only:
    #: the license carries only the codes' hashes, so no device can mint one.
    unlock_seed: bytes | None = field(default=None, repr=False)


def device_id(request: ActivationRequest) -> str:
    """A stable, non-reversible id for the requesting device (for heartbeats, unlock codes)."""
    h = hashlib.sha256(b"modelseal/device-id/v1\x00" + request.salt.encode())
    for comp in sorted(request.components, key=lambda c: (c.kind, c.digest)):
        h.update(b"\x00" + comp.kind.encode() + b"\x00" + comp.digest.encode())
    return b64url(h.digest()[:16])


def default_threshold(components: ActivationRequest | Sequence[AssessedComponent]) -> int:
    """A majority of the weight, raised so weak components alone cannot meet it when possible.

    Weights are the issuer's (:func:`assess_components`); a request is assessed
    with the built-in table first.

    Hostname, machine-id and CPU model travel with a disk image or are shared
    by many machines, so a binding they can satisfy on their own binds little.
    """
    if not isinstance(components, Sequence):
        components = assess_components(components)
    total = sum(c.weight for c in components)
    weak = sum(c.weight for c in components if c.strength == "weak")
    return min(total, max(total // 2 + 1, weak + 1))


def binding_warnings(components: Sequence[AssessedComponent], threshold: int) -> list[str]:
    weak = sum(c.weight for c in components if c.strength == "weak")
    strong = sum(c.weight for c in components if c.strength == "strong")
    out = []
    if weak >= threshold:
        out.append(
            f"weak components alone (weight {weak}: hostname, machine-id, CPU model travel "
            f"with a disk image or are shared) meet the threshold {threshold}"
        )
    if strong == 0:
        out.append("the device reports no strong components (typical of VMs and containers)")
    return out


def _claims(**fields: object) -> LicenseClaims:
    return LicenseClaims.model_validate(fields)


def issue_license(
    *,
    signing_key: PrivateKey,
    issuer: str,
    customer: str,
    audience: Sequence[str],
    request: ActivationRequest | None = None,
    content_keys: Sequence[tuple[ContentKey, str | None]] = (),
    alg: str | None = None,
    now: datetime | None = None,
    not_before: datetime | None = None,
    valid_for: timedelta | None = timedelta(days=365),
    plan: Plan = "subscription",
    features: Sequence[str] = (),
    max_calls: int | None = None,
    max_devices: int | None = None,
    offline_calls: int | None = None,
    grace: timedelta | None = None,
    heartbeat_url: str | None = None,
    heartbeat_interval: int = 3600,
    threshold: int | None = None,
    allow_vm: bool = True,
    allow_container: bool = True,
    strict_binding: bool = False,
    license_id: str | None = None,
    component_kinds: Mapping[str, KindInfo] | None = None,
    unlock_codes: int = 8,
    unlock_hours: int = 24,
    kek: bytes | None = None,
) -> IssuedLicense:
    """Sign a license; with a request, bind it and deliver the content keys to that device.

    Component strengths and weights come from ``component_kinds`` (default:
    :data:`modelseal.device.COMPONENT_KINDS`), never from the request.
    ``kek`` lets a license server choose the license KEK (and derive the
    device's heartbeat credential from it); by default it is fresh and random.

    A bound license carries ``unlock_codes`` one-time emergency codes (0 for
    none), each granting ``unlock_hours`` (1..720) once; the vendor derives
    them later from :attr:`IssuedLicense.unlock_seed`.
    """
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    nbf = not_before or now
    jti = license_id or f"lic_{uuid.uuid4().hex}"
    if not audience:
        raise IssueArgumentError("a license must name at least one model or product (aud)")
    if content_keys and request is None:
        raise IssueArgumentError("content keys can only be delivered to a device: give a request")
    chosen = alg or signing_key.default_algorithm
    if chosen not in signing_key.algorithms:
        raise UnsupportedAlgorithmError(
            f"a {signing_key.kty} key cannot sign {chosen}; it signs "
            f"{', '.join(signing_key.algorithms)}"
        )
    exp = None
    if plan == "perpetual":
        valid_for = None
    elif valid_for is None:
        raise IssueArgumentError(f"a {plan} license needs an expiry")
    if valid_for is not None:
        if valid_for.total_seconds() <= 0:
            raise IssueArgumentError("the validity must be positive")
        try:
            exp = int((nbf + valid_for).timestamp())
        except (OverflowError, ValueError):
            raise IssueArgumentError("the validity ends after the year 9999") from None
    if grace is not None and grace.total_seconds() < 0:
        raise IssueArgumentError("the offline grace cannot be negative")

    warnings: list[str] = []
    if exp is not None and exp <= int(now.timestamp()):
        warnings.append("the license has already expired: it will not open anywhere")
    if grace is not None and not heartbeat_url:
        warnings.append("offline grace has no effect without a heartbeat URL")
    binding = None
    keys = None
    unlock_seed = None
    unlock = None
    if request is not None:
        components = assess_components(request, component_kinds)
        total = sum(c.weight for c in components)
        if total > 255:
            raise LicenseFormatError(f"total component weight {total} exceeds 255 key shares")
        k = threshold if threshold is not None else default_threshold(components)
        if not 1 <= k <= total:
            raise IssueArgumentError(
                f"threshold {k} is outside 1..{total}, the total weight of this device's "
                "components: the license could never open there"
            )
        relabelled = sorted(
            {
                f"{c.kind} ({c.strength}, weight {c.weight})"
                for c, a in zip(request.components, components, strict=True)
                if (c.strength, c.weight) != (a.strength, a.weight)
            }
        )
        if relabelled:
            # The device's own code writes the table's labels: a difference means an
            # edited request or another version's table. Either way, ours are used.
            warnings.append(
                "the request labels differ from the issuer's table, which is used: "
                + ", ".join(relabelled)
            )
        warnings += binding_warnings(components, k)
        env = request.environment.virtualization
        if env == "vm" and not allow_vm:
            warnings.append(
                "the request comes from a virtual machine and the license refuses VMs: "
                "it will not open on the requesting device"
            )
        if env == "container" and not allow_container:
            warnings.append(
                "the request comes from a container and the license refuses containers: "
                "it will not open on the requesting device"
            )
        weak_alone = [w for w in warnings if w.startswith("weak components")]
        if strict_binding and weak_alone:
            raise WeakBindingError(weak_alone[0])
        binding = DeviceBinding(
            device_id=device_id(request),
            salt=request.salt,
            threshold=k,
            components=tuple(
                BoundComponent(kind=c.kind, digest=c.digest, weight=c.weight, strength=c.strength)
                for c in components
            ),
            allow_vm=allow_vm,
            allow_container=allow_container,
        )
        holders = [
            ShareHolder(kind=c.kind, weight=c.weight, secret=b64url_decode(c.secret))
            for c in components
        ]
        keys = build(jti=jti, holders=holders, threshold=k, content_keys=content_keys, kek=kek)
        if unlock_codes:
            if not 1 <= unlock_hours <= 720:
                raise IssueArgumentError("unlock_hours must be in 1..720")
            unlock_seed = os.urandom(SEED_SIZE)
            try:
                verifiers = make_verifiers(
                    unlock_seed, license_id=jti, device_id=binding.device_id, count=unlock_codes
                )
            except ValueError as exc:
                raise IssueArgumentError(str(exc)) from None
            unlock = UnlockCodes(hours=unlock_hours, verifiers=verifiers)
    try:
        claims = _claims(
            iss=issuer,
            sub=customer,
            aud=tuple(audience),
            jti=jti,
            iat=int(now.timestamp()),
            nbf=int(nbf.timestamp()),
            exp=exp,
            plan=plan,
            entitlements=tuple(sorted(set(features))),
            limits={"calls": max_calls, "devices": max_devices, "offline_calls": offline_calls},
            grace=int(grace.total_seconds()) if grace is not None else None,
            heartbeat={"url": heartbeat_url, "interval": heartbeat_interval}
            if heartbeat_url
            else None,
            device=binding,
            keys=keys,
            unlock=unlock,
        )
    except ValidationError as exc:
        raise IssueArgumentError(f"invalid license: {_field_errors(exc)}") from None
    token = jws.encode(
        claims.model_dump(mode="json", exclude_none=True),
        signing_key,
        alg=chosen,
        headers={"typ": LICENSE_TYP, "kid": signing_key.key_id},
    )
    return IssuedLicense(
        token=token, claims=claims, warnings=tuple(warnings), unlock_seed=unlock_seed
    )
