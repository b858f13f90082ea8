"""Activation requests: what a device sends the vendor to get a license (docs/device.md).

For each component the request carries two keyed hashes under a fresh
random salt, never the value itself. Both come from one memory-hard stretch
of the value (version 2):

- ``stretched`` = scrypt(kind NUL value, salt, N=2^14, r=8, p=1, 32 bytes)
- ``digest`` = HMAC-SHA256(stretched, "modelseal/device/v2/match"):
  public; copied into the license so the device can tell which of its
  components the license names.
- ``secret`` = HMAC-SHA256(stretched, "modelseal/device/v2/key"):
  the vendor encrypts key shares under it; it must never be put in a
  license, or anyone holding the license could open the shares.

Why the stretch: the license carries the salt and the digests, and the
shares are AEAD ciphertexts under keys derived from the secrets, so whoever
holds a license can test guesses for a component's value offline. For
high-entropy values (SMBIOS UUID, cluster UID, GPU UUID) that is hopeless
anyway; for guessable ones (a MAC once its vendor prefix is known: ~2^24,
a hostname from a dictionary) scrypt makes each guess cost ~50 ms and
16 MiB instead of a microsecond (version 1 used plain HMAC). The two labels
separate the uses: knowing a digest says nothing about the secret.

Because the secrets unwrap the shares, the request file itself is
sensitive (written mode 0600): whoever holds it *and* the license can open
the content keys without the device. Send it to the vendor over a channel
you trust and delete it once the license is issued.

Parsing is strict: an unknown or missing field, a wrong type, a
non-canonical base64url string or a duplicate component is refused with
:class:`RequestFormatError`, so the vendor's issuing code only ever sees
well-formed requests.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from modelseal._json import StrictJSONError, strict_loads
from modelseal.crypto import b64url, b64url_decode
from modelseal.device.errors import (
    InvalidLabelError,
    NoComponentsError,
    RequestFormatError,
    UnsupportedRequestVersionError,
)
from modelseal.device.fingerprint import (
    KIND_PATTERN,
    MAX_DETAIL_LENGTH,
    MAX_DETAILS,
    MAX_WEIGHT,
    PLATFORMS,
    STRENGTHS,
    VIRTUALIZATIONS,
    DeviceFingerprint,
    Environment,
    Strength,
)

REQUEST_VERSION: Final = 2
SALT_SIZE: Final = 32
NONCE_SIZE: Final = 16
DIGEST_SIZE: Final = 32
MAX_LABEL_LENGTH: Final = 200
MAX_COMPONENTS: Final = 256
MAX_REQUEST_BYTES: Final = 1 << 20

_MATCH_LABEL: Final = b"modelseal/device/v2/match"
_KEY_LABEL: Final = b"modelseal/device/v2/key"
_CREATED_AT: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")

#: scrypt cost: ~50 ms and 16 MiB per component on these machines (measured),
#: paid once per component by the device and by the issuer.
SCRYPT_N: Final = 1 << 14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1

_REQUEST_FIELDS: Final = frozenset(
    {"version", "label", "nonce", "created_at", "salt", "environment", "components"}
)
_ENVIRONMENT_FIELDS: Final = frozenset({"virtualization", "details", "platform"})
_COMPONENT_FIELDS: Final = frozenset({"kind", "strength", "weight", "digest", "secret"})


@functools.lru_cache(maxsize=256)
def _stretch(salt: bytes, kind: str, value: str) -> bytes:
    """Memory-hard hash of one component under the request salt (cached per process:
    a guard verifies the digests and opens the shares with the same values)."""
    password = kind.encode("utf-8") + b"\0" + value.encode("utf-8")
    kdf = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(password)


def _mac(label: bytes, salt: bytes, kind: str, value: str) -> str:
    return b64url(hmac.new(_stretch(salt, kind, value), label, hashlib.sha256).digest())


def component_digest(salt: bytes, kind: str, value: str) -> str:
    """The public match digest of one component (goes into the license)."""
    return _mac(_MATCH_LABEL, salt, kind, value)


def component_secret(salt: bytes, kind: str, value: str) -> str:
    """The per-component key-wrapping secret (for the vendor only, never in a license)."""
    return _mac(_KEY_LABEL, salt, kind, value)


def _fail(message: str) -> RequestFormatError:
    return RequestFormatError(f"activation request: {message}")


def _b64_field(name: str, text: object, size: int) -> bytes:
    """Decode canonical unpadded base64url of exactly ``size`` bytes."""
    if not isinstance(text, str):
        raise _fail(f"{name} must be a base64url string")
    try:
        raw = b64url_decode(text)
    except ValueError:
        raise _fail(f"{name} is not base64url") from None
    if len(raw) != size or b64url(raw) != text:
        # Re-encoding catches non-canonical trailing bits: one request, one spelling.
        raise _fail(f"{name} must encode exactly {size} bytes")
    return raw


def _int_field(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _fail(f"{name} must be an integer in {low}..{high}")
    return value


def _check_label(label: object) -> str | None:
    """None if the label is acceptable, else what is wrong with it."""
    if not isinstance(label, str) or not label.strip():
        return "label must be a non-empty string"
    if len(label) > MAX_LABEL_LENGTH:
        return f"label is longer than {MAX_LABEL_LENGTH} characters"
    if not label.isprintable():
        return "label must not contain control characters"
    return None


def _parse_created_at(text: object) -> datetime:
    if not isinstance(text, str) or not _CREATED_AT.match(text):
        raise _fail("created_at must be an RFC 3339 UTC time like 2026-01-31T12:00:00Z")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _fail("created_at is not a valid date and time") from None


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC, whole seconds, ``Z`` suffix."""
    if moment.tzinfo is None:
        raise ValueError("a timezone-aware datetime is required")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RequestComponent:
    """One component as the vendor sees it: its kind, strength, weight and two keyed hashes.

    ``secret`` is hidden from ``repr``: it unwraps a key share.
    """

    kind: str
    strength: Strength
    weight: int
    digest: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.kind, str)
            or len(self.kind) > 64
            or not KIND_PATTERN.match(self.kind)
        ):
            raise _fail("component kind must look like 'dmi.product_uuid'")
        if self.strength not in STRENGTHS:
            raise _fail(f"component strength must be one of {STRENGTHS}")
        _int_field("component weight", self.weight, 1, MAX_WEIGHT)
        _b64_field("component digest", self.digest, DIGEST_SIZE)
        _b64_field("component secret", self.secret, DIGEST_SIZE)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "strength": self.strength,
            "weight": self.weight,
            "digest": self.digest,
            "secret": self.secret,
        }

    @classmethod
    def from_json(cls, obj: object) -> RequestComponent:
        fields = _exact_object("component", obj, _COMPONENT_FIELDS)
        strength = fields["strength"]
        if strength not in STRENGTHS:
            raise _fail(f"component strength must be one of {STRENGTHS}")
        return cls(
            kind=fields["kind"],
            strength=strength,
            weight=fields["weight"],
            digest=fields["digest"],
            secret=fields["secret"],
        )


def _exact_object(name: str, obj: object, expected: frozenset[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _fail(f"{name} must be a JSON object")
    keys = set(obj)
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(str(k) for k in keys - expected)
        parts = [
            f"missing {', '.join(missing)}" if missing else "",
            f"unknown {', '.join(extra)}" if extra else "",
        ]
        raise _fail(f"{name}: {'; '.join(p for p in parts if p)}")
    return obj


def _environment_from_json(obj: object) -> Environment:
    fields = _exact_object("environment", obj, _ENVIRONMENT_FIELDS)
    virtualization, platform, details = (
        fields["virtualization"],
        fields["platform"],
        fields["details"],
    )
    if virtualization not in VIRTUALIZATIONS:
        raise _fail(f"environment.virtualization must be one of {VIRTUALIZATIONS}")
    if platform not in PLATFORMS:
        raise _fail(f"environment.platform must be one of {PLATFORMS}")
    if (
        not isinstance(details, list)
        or len(details) > MAX_DETAILS
        or not all(
            isinstance(d, str) and d and len(d) <= MAX_DETAIL_LENGTH and "\0" not in d
            for d in details
        )
    ):
        raise _fail(f"environment.details must be a list of at most {MAX_DETAILS} short strings")
    return Environment(virtualization=virtualization, details=tuple(details), platform=platform)


def _environment_to_json(env: Environment) -> dict[str, Any]:
    return {
        "virtualization": env.virtualization,
        "details": list(env.details),
        "platform": env.platform,
    }


def _sort_key(component: RequestComponent) -> tuple[str, str]:
    return (component.kind, component.digest)


@dataclass(frozen=True)
class ActivationRequest:
    """A device's request for a license: environment plus salted component hashes.

    Components are kept sorted by (kind, digest), which reveals nothing about
    the values' order, and must be unique. ``repr`` shows no secret.
    """

    version: int
    label: str
    nonce: str
    created_at: str
    salt: str
    environment: Environment
    components: tuple[RequestComponent, ...]

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or self.version != REQUEST_VERSION:
            raise UnsupportedRequestVersionError(
                f"activation request version {self.version!r} is not supported"
                f" (this release reads version {REQUEST_VERSION})"
            )
        problem = _check_label(self.label)
        if problem is not None:
            raise _fail(problem)
        _b64_field("nonce", self.nonce, NONCE_SIZE)
        _b64_field("salt", self.salt, SALT_SIZE)
        _parse_created_at(self.created_at)
        if not isinstance(self.environment, Environment):
            raise _fail("environment must be an Environment")
        if not isinstance(self.components, tuple) or not all(
            isinstance(c, RequestComponent) for c in self.components
        ):
            raise _fail("components must be a tuple of RequestComponent")
        if not 1 <= len(self.components) <= MAX_COMPONENTS:
            raise _fail(f"a request holds 1..{MAX_COMPONENTS} components")
        keys = [_sort_key(c) for c in self.components]
        if len(set(keys)) != len(keys):
            raise _fail("duplicate component")
        if len({c.digest for c in self.components}) != len(keys):
            raise _fail("duplicate component digest")
        if keys != sorted(keys):
            raise _fail("components must be sorted by kind, then digest")

    @property
    def salt_bytes(self) -> bytes:
        return b64url_decode(self.salt)

    @property
    def created(self) -> datetime:
        return _parse_created_at(self.created_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "label": self.label,
            "nonce": self.nonce,
            "created_at": self.created_at,
            "salt": self.salt,
            "environment": _environment_to_json(self.environment),
            "components": [c.to_json() for c in self.components],
        }

    @classmethod
    def from_json(cls, obj: object) -> ActivationRequest:
        """Parse and validate; anything malformed raises :class:`RequestFormatError`."""
        if isinstance(obj, dict) and "version" in obj and obj["version"] != REQUEST_VERSION:
            version = obj["version"]
            if isinstance(version, int) and not isinstance(version, bool):
                raise UnsupportedRequestVersionError(
                    f"activation request version {version} is not supported"
                    f" (this release reads version {REQUEST_VERSION})"
                )
        fields = _exact_object("request", obj, _REQUEST_FIELDS)
        _int_field("version", fields["version"], REQUEST_VERSION, REQUEST_VERSION)
        raw_components = fields["components"]
        if not isinstance(raw_components, list) or len(raw_components) > MAX_COMPONENTS:
            raise _fail(f"components must be a list of at most {MAX_COMPONENTS}")
        components = sorted((RequestComponent.from_json(c) for c in raw_components), key=_sort_key)
        return cls(
            version=REQUEST_VERSION,
            label=fields["label"],
            nonce=fields["nonce"],
            created_at=fields["created_at"],
            salt=fields["salt"],
            environment=_environment_from_json(fields["environment"]),
            components=tuple(components),
        )

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> ActivationRequest:
        if len(data) > MAX_REQUEST_BYTES:
            raise _fail(f"larger than {MAX_REQUEST_BYTES} bytes")
        try:
            obj = strict_loads(data)
        except StrictJSONError as exc:
            raise _fail(str(exc)) from None
        return cls.from_json(obj)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as JSON, created with mode 0600: the file holds the component secrets."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, self.to_bytes())
        finally:
            os.close(fd)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ActivationRequest:
        with Path(path).open("rb") as f:
            data = f.read(MAX_REQUEST_BYTES + 1)
        return cls.from_bytes(data)


def make_request(
    fp: DeviceFingerprint,
    *,
    label: str,
    salt: bytes | None = None,
    now: datetime | None = None,
    nonce: bytes | None = None,
) -> ActivationRequest:
    """The activation request for ``fp``.

    ``salt`` defaults to 32 fresh random bytes, so two requests from the same
    device share no digest; pass one (and ``nonce``, ``now``) only to get a
    reproducible request in tests.
    """
    problem = _check_label(label)
    if problem is not None:
        raise InvalidLabelError(problem)
    if not fp.components:
        raise NoComponentsError(
            "this device exposes no fingerprint component; a license cannot be bound to it"
        )
    salt = secrets.token_bytes(SALT_SIZE) if salt is None else salt
    if not isinstance(salt, bytes) or len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes")
    nonce = secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
    components = sorted(
        (
            RequestComponent(
                kind=c.kind,
                strength=c.strength,
                weight=c.weight,
                digest=component_digest(salt, c.kind, c.value),
                secret=component_secret(salt, c.kind, c.value),
            )
            for c in fp.components
        ),
        key=_sort_key,
    )
    return ActivationRequest(
        version=REQUEST_VERSION,
        label=label,
        nonce=b64url(nonce),
        created_at=format_time(now if now is not None else datetime.now(UTC)),
        salt=b64url(salt),
        environment=fp.environment,
        components=tuple(components),
    )
