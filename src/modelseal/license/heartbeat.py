"""Heartbeats between a licensed device and the control plane (docs/controlplane.md).

Request: a canonical JSON body naming the license, the device, a fresh
16-byte nonce, the device's time and usage, authenticated with
HMAC-SHA256 under the **device credential**::

    credential = HKDF-SHA256(KEK, salt="", info="modelseal/license/v1/heartbeat/" || jti)
    mac        = HMAC-SHA256(credential, "modelseal/heartbeat/v1" 0x00 body)

The KEK is the license key-encryption key the device rebuilds from its own
components (Shamir delivery, docs/license.md), so only the bound device can
produce the credential: a copied license cannot even report. The server
keeps the credential (encrypted at rest) from the moment it issued the
license.

Reply: a compact JWS (``typ`` ``modelseal-heartbeat+jwt``) signed by a
vendor key from the same trust store as licenses, carrying the validation
code, the server time, the request's nonce, the license and device ids and
optionally a renewed license. The device accepts a reply only if it
verifies under its trust store and echoes the nonce it just sent, so a
replayed, forged or redirected reply is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from modelseal.crypto import PrivateKey, b64url, b64url_decode, hkdf_sha256
from modelseal.license import jws
from modelseal.license.errors import LicenseError, LicenseFormatError
from modelseal.license.trust import TrustedKey, TrustStore

HEARTBEAT_TYP: Final = "modelseal-heartbeat+jwt"
PROTOCOL_VERSION: Final = 1
NONCE_SIZE: Final = 16
AUTH_SCHEME: Final = "Modelseal-Device"
#: A beat's body without shipped audit records stays far below 4 KiB; the
#: shipped records add at most ``MAX_SHIPPED_BYTES`` (and their JSON framing).
MAX_BODY_BYTES: Final = 24 * 1024
#: Shipped device audit records per beat, and their canonical JSON bytes
#: (docs/controlplane.md, "Shipped audit records"): small enough that a
#: catching-up device never makes one beat slow, large enough that a device
#: back from a week offline catches up in a few beats.
MAX_SHIPPED_RECORDS: Final = 64
MAX_SHIPPED_BYTES: Final = 16 * 1024
#: The members of a shipped record: a whole record of the device audit log
#: (docs/guard-audit-unlock.md §1), or its link alone (seq, prev, hash) for
#: records the server does not keep (the chain stays checkable either way).
FULL_RECORD_KEYS: Final = frozenset({"seq", "ts", "event", "reason", "data", "prev", "hash"})
LINK_RECORD_KEYS: Final = frozenset({"seq", "prev", "hash"})
_CREDENTIAL_INFO: Final = b"modelseal/license/v1/heartbeat/"
_MAC_LABEL: Final = b"modelseal/heartbeat/v1\x00"

Code = Literal[
    "VALID",
    "EXPIRED",
    "SUSPENDED",
    "REVOKED",
    "TOO_MANY_DEVICES",
    "FINGERPRINT_MISMATCH",
    "QUOTA_EXCEEDED",
    "AUDIT_ROLLBACK",
]
CODES: Final[tuple[str, ...]] = (
    "VALID",
    "EXPIRED",
    "SUSPENDED",
    "REVOKED",
    "TOO_MANY_DEVICES",
    "FINGERPRINT_MISMATCH",
    "QUOTA_EXCEEDED",
    "AUDIT_ROLLBACK",
)
#: Codes after which the Guard locks at once (the rest only stop resetting the grace).
#: ``AUDIT_ROLLBACK``: the device reported an audit head that does not extend the
#: one the server holds (a state file and log put back); the vendor clears it.
LOCKING_CODES: Final = frozenset(
    {"REVOKED", "SUSPENDED", "FINGERPRINT_MISMATCH", "TOO_MANY_DEVICES", "AUDIT_ROLLBACK"}
)
#: Codes that are still contact with the server: they restart the offline grace.
CONTACT_CODES: Final = frozenset({"VALID", "QUOTA_EXCEEDED"})
#: The most calls one lease grants (a device asking for more gets this many).
MAX_LEASE: Final = 1_000_000


class HeartbeatReplyError(LicenseError):
    """A heartbeat reply that is not signed by a trusted key, or not for this request."""

    reason = "heartbeat_reply_invalid"
    exit_code = 4


class StaleRevocationListError(HeartbeatReplyError):
    """A revocation list older than the one this device already imported.

    Importing it would change nothing a newer list has not decided (a
    revocation is never lifted); refusing says so instead of pretending.
    """

    reason = "revocation_list_outdated"


def device_credential(kek: bytes, *, jti: str) -> bytes:
    """The key only the bound device (and the issuing server) can compute."""
    return hkdf_sha256(kek, salt=b"", info=_CREDENTIAL_INFO + jti.encode(), length=32)


def new_nonce() -> str:
    return b64url(secrets.token_bytes(NONCE_SIZE))


@dataclass(frozen=True)
class HeartbeatRequest:
    """What the device reports. ``to_body`` is the exact byte string the MAC covers."""

    license_id: str
    device_id: str
    nonce: str
    time: int
    calls_used: int = 0
    audit_head: tuple[int, str] | None = None
    #: calls the device asks to lease (0: none); sent only when non-zero, so a
    #: request without a lease is byte-for-byte what it was before leases
    lease: int = 0
    #: device audit records after the server's last acknowledged one, in seq
    #: order (whole or links only); sent only when non-empty, like ``lease``
    audit_records: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "license": self.license_id,
            "device": self.device_id,
            "nonce": self.nonce,
            "time": self.time,
            "calls_used": self.calls_used,
            "audit_head": list(self.audit_head) if self.audit_head is not None else None,
        }
        if self.lease:
            body["lease"] = self.lease
        if self.audit_records:
            body["audit_records"] = [dict(r) for r in self.audit_records]
        return body

    def to_body(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_body(cls, body: bytes) -> HeartbeatRequest:
        """Strict parse (the server's side); malformed input raises LicenseFormatError."""
        from modelseal._json import StrictJSONError, strict_loads

        if len(body) > MAX_BODY_BYTES:
            raise LicenseFormatError(f"heartbeat larger than {MAX_BODY_BYTES} bytes")
        try:
            obj = strict_loads(body)
        except StrictJSONError as exc:
            raise LicenseFormatError(f"heartbeat is not strict JSON ({exc})") from None
        expected = {"v", "license", "device", "nonce", "time", "calls_used", "audit_head"}
        if not isinstance(obj, dict) or set(obj) - {"lease", "audit_records"} != expected:
            raise LicenseFormatError(
                f"heartbeat must have exactly {sorted(expected)} "
                "(and optionally lease, audit_records)"
            )
        if obj["v"] != PROTOCOL_VERSION or isinstance(obj["v"], bool):
            raise LicenseFormatError(f"heartbeat version must be {PROTOCOL_VERSION}")
        for name in ("license", "device", "nonce"):
            value = obj[name]
            if (
                not isinstance(value, str)
                or not 1 <= len(value) <= 128
                or not value.isascii()
                or not value.isprintable()
            ):
                raise LicenseFormatError(f"heartbeat {name} must be a short printable string")
        lease = obj.get("lease", 0)
        if not isinstance(lease, int) or isinstance(lease, bool) or not 0 <= lease <= MAX_LEASE:
            raise LicenseFormatError(f"heartbeat lease must be an integer 0..{MAX_LEASE}")
        for name in ("time", "calls_used"):
            value = obj[name]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
                raise LicenseFormatError(f"heartbeat {name} must be a non-negative integer")
        try:
            # exactly 22 base64url characters: the server keeps nonces space-joined
            if len(obj["nonce"]) != 22 or len(b64url_decode(obj["nonce"])) != NONCE_SIZE:
                raise ValueError
            if not obj["nonce"].replace("-", "").replace("_", "").isalnum():
                raise ValueError
        except ValueError:
            raise LicenseFormatError("heartbeat nonce must be 16 bytes of base64url") from None
        head = obj["audit_head"]
        parsed_head: tuple[int, str] | None = None
        if head is not None:
            if (
                not isinstance(head, list)
                or len(head) != 2
                or not isinstance(head[0], int)
                or isinstance(head[0], bool)
                or not isinstance(head[1], str)
                or len(head[1]) > 128
                or not head[1].isascii()
                or not head[1].isprintable()
                or not 0 <= head[0] < 2**63
            ):
                raise LicenseFormatError("heartbeat audit_head must be [seq, hash]")
            parsed_head = (head[0], head[1])
        records = parse_shipped_records(obj.get("audit_records", []))
        return cls(
            license_id=obj["license"],
            device_id=obj["device"],
            nonce=obj["nonce"],
            time=obj["time"],
            calls_used=obj["calls_used"],
            audit_head=parsed_head,
            lease=lease,
            audit_records=records,
        )


def _short_text(value: object, limit: int) -> bool:
    return isinstance(value, str) and len(value) <= limit and value.isprintable()


def _link_hash(value: object) -> bool:
    """43 base64url characters: a SHA-256 or HMAC-SHA256 of the device audit chain."""
    return (
        isinstance(value, str)
        and len(value) == 43
        and value.isascii()
        and value.replace("-", "").replace("_", "").isalnum()
    )


def parse_shipped_records(value: object) -> tuple[dict[str, Any], ...]:
    """Shape-check the ``audit_records`` of a heartbeat (the server's side).

    Only the shape: that the records extend the chain the server holds is the
    server's check (it knows the head), and a record's hash is checked there
    against its content. Consecutive ``seq`` is checked here, so a batch is
    one piece of chain or nothing.
    """
    if value == []:
        return ()
    if not isinstance(value, list) or len(value) > MAX_SHIPPED_RECORDS:
        raise LicenseFormatError(
            f"heartbeat audit_records must be a list of 1..{MAX_SHIPPED_RECORDS} records"
        )
    records: list[dict[str, Any]] = []
    for rec in value:
        if not isinstance(rec, dict) or set(rec) not in (FULL_RECORD_KEYS, LINK_RECORD_KEYS):
            raise LicenseFormatError(
                "a shipped audit record has exactly seq, ts, event, reason, data, prev, hash "
                "(or seq, prev, hash)"
            )
        seq = rec["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**53:
            raise LicenseFormatError("a shipped audit record's seq must be a non-negative integer")
        if records and seq != records[-1]["seq"] + 1:
            raise LicenseFormatError("shipped audit records must have consecutive seq")
        if not _link_hash(rec["prev"]) or not _link_hash(rec["hash"]):
            raise LicenseFormatError("a shipped audit record's prev and hash are 43 base64url")
        if len(rec) == len(FULL_RECORD_KEYS) and not (
            _short_text(rec["ts"], 40)
            and _short_text(rec["event"], 64)
            and rec["event"]
            and (rec["reason"] is None or _short_text(rec["reason"], 64))
            and isinstance(rec["data"], dict)
        ):
            raise LicenseFormatError(
                "a shipped audit record needs ts and event strings, reason a string or null "
                "(at most 64 characters) and data an object"
            )
        records.append(rec)
    return tuple(records)


def mac_body(credential: bytes, body: bytes) -> str:
    return b64url(hmac.new(credential, _MAC_LABEL + body, hashlib.sha256).digest())


def authorization_header(credential: bytes, body: bytes) -> str:
    return f"{AUTH_SCHEME} {mac_body(credential, body)}"


def check_mac(credential: bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of an ``Authorization: Modelseal-Device MAC`` header."""
    if not header or not header.startswith(AUTH_SCHEME + " "):
        return False
    presented = header[len(AUTH_SCHEME) + 1 :].strip()
    return hmac.compare_digest(presented.encode(), mac_body(credential, body).encode())


@dataclass(frozen=True)
class Lease:
    """Calls the server granted one device: its call counter may run from ``start`` to ``end``.

    The range is on the device's own counter (what it reports as
    ``calls_used``); the server has already counted it against the quota.
    Unspent calls are forfeit once ``exp`` (Unix seconds) passes on the
    device's forward-only clock.
    """

    start: int
    end: int
    exp: int

    def to_json(self) -> dict[str, int]:
        return {"start": self.start, "end": self.end, "exp": self.exp}

    @classmethod
    def from_json(cls, obj: object) -> Lease:
        if not isinstance(obj, dict) or set(obj) != {"start", "end", "exp"}:
            raise HeartbeatReplyError("lease must have exactly start, end and exp")
        values = [obj["start"], obj["end"], obj["exp"]]
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53 for v in values
        ):
            raise HeartbeatReplyError("lease start, end and exp must be non-negative integers")
        start, end, exp = values
        if not start < end <= start + MAX_LEASE:
            raise HeartbeatReplyError("lease range must be non-empty and at most MAX_LEASE")
        return cls(start=start, end=end, exp=exp)


@dataclass(frozen=True)
class HeartbeatVerdict:
    """A verified reply: what the server decided, and when (its clock)."""

    code: str
    server_time: int
    license_id: str
    device_id: str
    nonce: str
    message: str = ""
    interval: int | None = None
    #: a renewed license for this device, when the server has one
    license_token: str | None = field(default=None, repr=False)
    #: calls leased to this device by this reply (bound to its nonce like the rest)
    lease: Lease | None = None
    #: the seq of the device audit record the server holds last (-1: none yet):
    #: the device ships what comes after it; absent from servers that take none
    audit_ack: int | None = None

    @property
    def ok(self) -> bool:
        return self.code == "VALID"


def sign_reply(verdict: HeartbeatVerdict, key: PrivateKey, *, issuer: str) -> str:
    claims: dict[str, Any] = {
        "iss": issuer,
        "lic": verdict.license_id,
        "dev": verdict.device_id,
        "nonce": verdict.nonce,
        "code": verdict.code,
        "time": verdict.server_time,
    }
    if verdict.message:
        claims["msg"] = verdict.message
    if verdict.interval is not None:
        claims["interval"] = verdict.interval
    if verdict.license_token is not None:
        claims["license"] = verdict.license_token
    if verdict.lease is not None:
        claims["lease"] = verdict.lease.to_json()
    if verdict.audit_ack is not None:
        claims["ack"] = verdict.audit_ack
    return jws.encode(
        claims,
        key,
        alg=key.default_algorithm,
        headers={"typ": HEARTBEAT_TYP, "kid": key.key_id},
    )


def _check_signer(
    trust: TrustStore, trusted: TrustedKey, iss: object, issuer: str | None, what: str
) -> None:
    """The key's own issuer pin first, then the caller's expected issuer (as licenses do).

    A caller's ``issuer`` never widens what a key may sign for: with two
    vendors' keys trusted, one must not answer or revoke in the other's name.
    """
    if not isinstance(iss, str):
        raise HeartbeatReplyError(f"{what} names no issuer")
    try:
        trust.check_issuer(trusted, iss)
    except LicenseError as exc:
        raise HeartbeatReplyError(f"{what} refused: {exc}") from None
    if issuer is not None and iss != issuer:
        raise HeartbeatReplyError(f"{what} from another issuer")


def verify_reply(
    token: str,
    trust: TrustStore,
    *,
    license_id: str,
    device_id: str,
    nonce: str,
    issuer: str | None = None,
) -> HeartbeatVerdict:
    """Verify a reply under ``trust`` and bind it to the request just sent."""
    try:
        header = jws.unverified_header(token)
        if header.get("typ") != HEARTBEAT_TYP or set(header) != {"typ", "kid", "alg"}:
            raise HeartbeatReplyError("not a heartbeat reply")
        kid, alg = header["kid"], header["alg"]
        if not isinstance(kid, str) or not isinstance(alg, str):
            raise HeartbeatReplyError("heartbeat reply header needs string kid and alg")
        trusted = trust.lookup(kid)
        if alg not in trusted.algorithms:
            raise HeartbeatReplyError(f"algorithm {alg!r} is not allowed for key {kid}")
        claims = jws.decode(token, trusted.key, alg=alg)
    except HeartbeatReplyError:
        raise
    except LicenseError as exc:
        raise HeartbeatReplyError(f"heartbeat reply refused: {exc}") from None
    _check_signer(trust, trusted, claims.get("iss"), issuer, "heartbeat reply")
    if claims.get("nonce") != nonce:
        raise HeartbeatReplyError("heartbeat reply is not for this request (nonce)")
    if claims.get("lic") != license_id or claims.get("dev") != device_id:
        raise HeartbeatReplyError("heartbeat reply is for another license or device")
    code, server_time = claims.get("code"), claims.get("time")
    if code not in CODES:
        raise HeartbeatReplyError(f"unknown validation code {code!r}")
    if not isinstance(server_time, int) or isinstance(server_time, bool):
        raise HeartbeatReplyError("heartbeat reply has no server time")
    renewed = claims.get("license")
    interval = claims.get("interval")
    message = claims.get("msg", "")
    if renewed is not None and not isinstance(renewed, str):
        raise HeartbeatReplyError("renewed license must be a string")
    if interval is not None and (not isinstance(interval, int) or isinstance(interval, bool)):
        raise HeartbeatReplyError("interval must be an integer")
    lease = Lease.from_json(claims["lease"]) if "lease" in claims else None
    ack = claims.get("ack")
    if ack is not None and (
        not isinstance(ack, int) or isinstance(ack, bool) or not -1 <= ack < 2**53
    ):
        raise HeartbeatReplyError("ack must be an integer >= -1")
    return HeartbeatVerdict(
        code=str(code),
        server_time=server_time,
        license_id=license_id,
        device_id=device_id,
        nonce=nonce,
        message=str(message)[:500],
        interval=interval,
        license_token=renewed,
        lease=lease,
        audit_ack=ack,
    )


# --- signed revocation lists (air-gapped sites) ---------------------------------------

REVOCATIONS_TYP: Final = "modelseal-revocations+jwt"


@dataclass(frozen=True)
class RevocationList:
    """Who is revoked, as of ``issued_at``; signed by the vendor like a license."""

    issuer: str
    issued_at: int
    next_update: int
    licenses: frozenset[str]
    devices: frozenset[tuple[str, str]]  # (license id, device id)

    def revokes(self, license_id: str, device_id: str | None) -> bool:
        return license_id in self.licenses or (license_id, device_id or "") in self.devices


def sign_revocations(rl: RevocationList, key: PrivateKey) -> str:
    claims = {
        "iss": rl.issuer,
        "iat": rl.issued_at,
        "next_update": rl.next_update,
        "licenses": sorted(rl.licenses),
        "devices": sorted([lic, dev] for lic, dev in rl.devices),
    }
    return jws.encode(
        claims, key, alg=key.default_algorithm, headers={"typ": REVOCATIONS_TYP, "kid": key.key_id}
    )


def verify_revocations(token: str, trust: TrustStore, *, issuer: str) -> RevocationList:
    """Verify a revocation list file; anything not signed by ``issuer``'s trusted key is refused."""
    token = token.strip()
    try:
        header = jws.unverified_header(token)
        if header.get("typ") != REVOCATIONS_TYP or set(header) != {"typ", "kid", "alg"}:
            raise HeartbeatReplyError("not a modelseal revocation list")
        trusted = trust.lookup(str(header["kid"]))
        if header["alg"] not in trusted.algorithms:
            raise HeartbeatReplyError("revocation list signed with a disallowed algorithm")
        claims = jws.decode(token, trusted.key, alg=str(header["alg"]))
    except HeartbeatReplyError:
        raise
    except LicenseError as exc:
        raise HeartbeatReplyError(f"revocation list refused: {exc}") from None
    _check_signer(trust, trusted, claims.get("iss"), issuer, "revocation list")
    licenses, devices = claims.get("licenses"), claims.get("devices")
    iat, next_update = claims.get("iat"), claims.get("next_update")
    if (
        not isinstance(licenses, list)
        or not all(isinstance(x, str) for x in licenses)
        or not isinstance(devices, list)
        or not all(
            isinstance(d, list) and len(d) == 2 and all(isinstance(x, str) for x in d)
            for d in devices
        )
        or not isinstance(iat, int)
        or not isinstance(next_update, int)
    ):
        raise HeartbeatReplyError("malformed revocation list")
    return RevocationList(
        issuer=issuer,
        issued_at=iat,
        next_update=next_update,
        licenses=frozenset(licenses),
        devices=frozenset((d[0], d[1]) for d in devices),
    )
