"""Verifying licenses strictly (RFC 8725 as the checklist) and opening keys.

Order of checks: header shape and ``typ``; ``kid`` in the trust store; the
algorithm must be one the trusted key allows (the token never chooses);
signature; claims schema (unknown claims refused); issuer (the trusted key's
pin, then the caller's expectation); audience;
``nbf``/``exp`` with leeway; device binding and environment.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from modelseal.crypto import ContentKey, b64url_decode
from modelseal.license import jws
from modelseal.license.claims import LICENSE_TYP, LicenseClaims
from modelseal.license.errors import (
    AlgorithmNotAllowedError,
    EnvironmentRefusedError,
    FeatureNotLicensedError,
    LicenseExpiredError,
    LicenseFormatError,
    LicenseNotYetValidError,
    WrongAudienceError,
    WrongDeviceError,
    WrongIssuerError,
)
from modelseal.license.keydelivery import (
    LocalSecret,
    recover_kek,
    state_key,
    unwrap_content_key,
    unwrap_unlock_secret,
)
from modelseal.license.trust import TrustStore

if TYPE_CHECKING:
    from modelseal.device import DeviceFingerprint

DEFAULT_LEEWAY = timedelta(seconds=60)


@dataclass(frozen=True)
class License:
    """A verified license."""

    token: str
    header: dict[str, Any]
    claims: LicenseClaims

    @property
    def license_id(self) -> str:
        return self.claims.jti

    @property
    def customer(self) -> str:
        return self.claims.sub

    def has_feature(self, feature: str) -> bool:
        return feature in self.claims.entitlements

    def require_feature(self, feature: str) -> None:
        if not self.has_feature(feature):
            raise FeatureNotLicensedError(f"feature {feature!r} is not licensed")


def read_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims WITHOUT verifying anything: for display only."""
    token = token.strip()
    parts = token.split(".")
    if len(parts) != 3:
        raise LicenseFormatError("a license is a compact JWS: three base64url parts")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise LicenseFormatError("license header or payload is not base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise LicenseFormatError("license header and payload must be JSON objects")
    return header, claims


def verify_license(
    token: str,
    trust: TrustStore,
    *,
    audience: str | Sequence[str] | None = None,
    issuer: str | None = None,
    now: datetime | None = None,
    leeway: timedelta = DEFAULT_LEEWAY,
    fingerprint: DeviceFingerprint | None = None,
) -> License:
    """Verify ``token``; with a fingerprint, also check the device binding."""
    token = token.strip()
    header = jws.unverified_header(token)
    if header.get("typ") != LICENSE_TYP:
        raise LicenseFormatError(f"typ must be {LICENSE_TYP!r}, got {header.get('typ')!r}")
    kid, alg = header.get("kid"), header.get("alg")
    if not isinstance(kid, str) or not isinstance(alg, str):
        raise LicenseFormatError("license header needs string kid and alg")
    if set(header) - {"typ", "kid", "alg"}:
        # jku, x5u, jwk, crit...: key material from the token is never trusted
        raise LicenseFormatError(
            f"unexpected header fields {sorted(set(header) - {'typ', 'kid', 'alg'})}"
        )
    trusted = trust.lookup(kid)
    if alg not in trusted.algorithms:
        raise AlgorithmNotAllowedError(f"algorithm {alg!r} is not allowed for key {kid}")
    payload = jws.decode(token, trusted.key, alg=alg)
    try:
        # strict JSON-mode validation: a signed "nbf": true or "calls": "5" is
        # refused, not coerced (another verifier might read it differently)
        claims = LicenseClaims.model_validate_json(json.dumps(payload), strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise LicenseFormatError(f"invalid license claims ({where}: {first.get('msg')})") from None
    # The key's own pin first: a caller's ``issuer`` never widens what a key
    # may sign for (a key pinned to vendor B cannot sign as A because the
    # caller expects A), and an unpinned key cannot claim a pinned vendor's name.
    trust.check_issuer(trusted, claims.iss)
    if issuer is not None and claims.iss != issuer:
        raise WrongIssuerError(f"issued by {claims.iss!r}, expected {issuer!r}")
    if audience is not None:
        wanted = [audience] if isinstance(audience, str) else list(audience)
        if not any(a in claims.aud for a in wanted):
            raise WrongAudienceError(f"the license does not cover {', '.join(wanted)}")
    t = int((now or datetime.now(UTC)).timestamp())
    slack = int(leeway.total_seconds())
    if t + slack < claims.nbf:
        raise LicenseNotYetValidError("the license is not valid yet")
    if claims.exp is not None and t - slack >= claims.exp:
        raise LicenseExpiredError("the license has expired")
    lic = License(token=token, header=header, claims=claims)
    if fingerprint is not None:
        check_device(lic, fingerprint)
    return lic


def _local_secrets(lic: License, fingerprint: DeviceFingerprint) -> list[LocalSecret]:
    from modelseal.device import component_secret

    binding = lic.claims.device
    assert binding is not None
    salt = b64url_decode(binding.salt)
    return [
        LocalSecret(kind=c.kind, secret=b64url_decode(component_secret(salt, c.kind, c.value)))
        for c in fingerprint.components
    ]


def matched_weight(lic: License, fingerprint: DeviceFingerprint) -> int:
    from modelseal.device import component_digest

    binding = lic.claims.device
    if binding is None:
        return 0
    salt = b64url_decode(binding.salt)
    local = {(c.kind, component_digest(salt, c.kind, c.value)) for c in fingerprint.components}
    return sum(b.weight for b in binding.components if (b.kind, b.digest) in local)


def check_device(lic: License, fingerprint: DeviceFingerprint) -> int:
    """Raise unless the device meets the binding; returns the matched weight."""
    binding = lic.claims.device
    if binding is None:
        return 0
    env = fingerprint.environment.virtualization
    if env == "vm" and not binding.allow_vm:
        raise EnvironmentRefusedError("the license does not allow virtual machines")
    if env == "container" and not binding.allow_container:
        raise EnvironmentRefusedError("the license does not allow containers")
    weight = matched_weight(lic, fingerprint)
    if weight < binding.threshold:
        raise WrongDeviceError(
            f"this device matches weight {weight} of the {binding.threshold} the license needs"
        )
    return weight


def license_kek(lic: License, fingerprint: DeviceFingerprint) -> bytes:
    """The license KEK, rebuilt from the shares this device opens (no check involved)."""
    if lic.claims.keys is None or lic.claims.device is None:
        from modelseal.license.errors import KeyDeliveryError

        raise KeyDeliveryError("the license delivers no keys")
    return recover_kek(lic.claims.keys, jti=lic.claims.jti, local=_local_secrets(lic, fingerprint))


def open_content_key(lic: License, fingerprint: DeviceFingerprint, key_id: str) -> ContentKey:
    kek = license_kek(lic, fingerprint)
    assert lic.claims.keys is not None
    return unwrap_content_key(lic.claims.keys, kek, jti=lic.claims.jti, key_id=key_id)


def open_unlock_secret(lic: License, fingerprint: DeviceFingerprint) -> bytes:
    kek = license_kek(lic, fingerprint)
    assert lic.claims.keys is not None
    return unwrap_unlock_secret(lic.claims.keys, kek, jti=lic.claims.jti)


def open_state_key(lic: License, fingerprint: DeviceFingerprint) -> bytes:
    return state_key(license_kek(lic, fingerprint), jti=lic.claims.jti)
