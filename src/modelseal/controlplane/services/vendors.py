"""Vendors (tenants), their signing keys and API tokens."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelseal.controlplane.errors import AlreadyInitializedError, NotFoundError, UnauthorizedError
from modelseal.controlplane.models import ApiToken, SigningKey, Vendor, new_id, now_s
from modelseal.controlplane.secretbox import SecretBox, token_hash
from modelseal.crypto import PrivateKey, generate_private_key, load_private_key

ROLES = ("owner", "issuer", "auditor")
TOKEN_PREFIX = "mst_"  # noqa: S105 (a prefix, not a secret)


@dataclass(frozen=True)
class Caller:
    """Who is calling: resolved from the bearer token on every request."""

    vendor_id: str
    vendor_name: str
    role: str
    token_id: str
    #: the person acting (a session, or a personal token); None for a service token
    user_id: str | None = None
    #: a session that has not passed the second factor yet may only enrol it
    mfa: bool = True
    via: str = "token"


def _store_key(session: Session, box: SecretBox, vendor: Vendor, key: PrivateKey) -> SigningKey:
    from modelseal.controlplane import hsm

    if isinstance(key, hsm.Pkcs11PrivateKey):
        private = hsm.reference(key)  # the token keeps the key; the row, where to find it
    else:
        private = box.seal(key.to_pem(), purpose="signing_key", row=key.key_id)
    row = SigningKey(
        kid=key.key_id,
        vendor_id=vendor.id,
        kty=key.kty,
        alg=key.default_algorithm,
        private_sealed=private,
        public_pem=key.public_key().to_pem().decode(),
        active=True,
        created_at=now_s(),
    )
    session.add(row)
    return row


def new_token(session: Session, vendor_id: str, *, name: str, role: str) -> tuple[ApiToken, str]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        id=new_id("tok"),
        vendor_id=vendor_id,
        name=name,
        role=role,
        token_hash=token_hash(token),
        created_at=now_s(),
    )
    session.add(row)
    return row, token


def init_vendor(session: Session, box: SecretBox, *, name: str, kty: str) -> tuple[Vendor, str]:
    """Create a vendor with a fresh signing key and an owner token (returned, shown once)."""
    existing = session.execute(select(Vendor).where(Vendor.name == name)).scalar_one_or_none()
    if existing is not None:
        raise AlreadyInitializedError(f"vendor {name!r} already exists")
    vendor = Vendor(id=new_id("ven"), name=name, created_at=now_s())
    session.add(vendor)
    session.flush()
    _store_key(session, box, vendor, generate_private_key(kty))
    _, token = new_token(session, vendor.id, name="owner (init)", role="owner")
    return vendor, token


def authenticate(session: Session, token: str | None) -> Caller:
    if not token:
        raise UnauthorizedError("an API token is required (Authorization: Bearer TOKEN)")
    row = session.execute(
        select(ApiToken, Vendor)
        .join(Vendor, Vendor.id == ApiToken.vendor_id)
        .where(ApiToken.token_hash == token_hash(token), ApiToken.revoked_at.is_(None))
    ).one_or_none()
    if row is None:
        raise UnauthorizedError("the API token is not valid")
    tok, vendor = row
    return Caller(
        vendor_id=vendor.id,
        vendor_name=vendor.name,
        role=tok.role,
        token_id=tok.id,
        user_id=tok.user_id,
    )


def list_tokens(session: Session, caller: Caller) -> list[ApiToken]:
    return list(
        session.execute(
            select(ApiToken).where(ApiToken.vendor_id == caller.vendor_id).order_by(ApiToken.id)
        ).scalars()
    )


def revoke_token(session: Session, caller: Caller, token_id: str) -> ApiToken:
    row = session.execute(
        select(ApiToken).where(ApiToken.vendor_id == caller.vendor_id, ApiToken.id == token_id)
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now_s()
    return row


def active_key_row(session: Session, vendor_id: str) -> SigningKey:
    row = session.execute(
        select(SigningKey)
        .where(SigningKey.vendor_id == vendor_id, SigningKey.active.is_(True))
        .order_by(SigningKey.created_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError("the vendor has no active signing key")
    return row


def signing_key(box: SecretBox, row: SigningKey) -> PrivateKey:
    return unseal_signing_key(box, row.kid, row.private_sealed)


def unseal_signing_key(box: SecretBox, kid: str, sealed: str) -> PrivateKey:
    from modelseal.controlplane import hsm

    if sealed.startswith(hsm.PREFIX):
        if box.hsm is None:
            raise hsm.HsmError(
                f"signing key {kid} is in a PKCS#11 token, and none is configured"
                " (MODELSEAL_PKCS11_MODULE, _TOKEN, _PIN_FILE)"
            )
        key: PrivateKey = box.hsm.key(hsm.parse_reference(sealed))
        return key
    return load_private_key(box.open(sealed, purpose="signing_key", row=kid))


def list_keys(session: Session, caller: Caller) -> list[SigningKey]:
    return list(
        session.execute(
            select(SigningKey)
            .where(SigningKey.vendor_id == caller.vendor_id)
            .order_by(SigningKey.created_at, SigningKey.kid)
        ).scalars()
    )


def rotate_key(
    session: Session, box: SecretBox, caller: Caller, kty: str | None, *, store: str = "database"
) -> SigningKey:
    """A new key signs from now on; old public keys stay in the trust set to verify.

    ``store="hsm"`` makes the pair in the configured PKCS#11 token (controlplane/hsm.py).
    """
    from modelseal.controlplane import hsm

    current = active_key_row(session, caller.vendor_id)
    vendor = session.get(Vendor, caller.vendor_id)
    assert vendor is not None
    if store == "hsm":
        if box.hsm is None:
            raise hsm.HsmError(
                "no PKCS#11 token is configured (MODELSEAL_PKCS11_MODULE, _TOKEN, _PIN_FILE)"
            )
        key: PrivateKey = box.hsm.generate(kty or current.kty, vendor=vendor.name)
    else:
        key = generate_private_key(kty or current.kty)
    current.active = False
    session.flush()
    return _store_key(session, box, vendor, key)


def trust_set_pem(session: Session, caller: Caller) -> str:
    """Every public key of the vendor, newest first, as concatenated PEM blocks."""
    keys = list_keys(session, caller)
    return "".join(k.public_pem for k in sorted(keys, key=lambda k: -k.created_at))


def trust_file(session: Session, caller: Caller) -> dict[str, object]:
    """Every public key of the vendor, each pinned to its name and algorithm, as a
    trust file (docs/license.md): what ``Guard(..., trust)`` and
    ``license verify --trust`` read, rotation included."""
    from modelseal.crypto import load_public_key
    from modelseal.license.trust import TRUST_FILE_VERSION, trust_file_entry

    keys = sorted(list_keys(session, caller), key=lambda k: -k.created_at)
    return {
        "modelseal_trust": TRUST_FILE_VERSION,
        "keys": [
            trust_file_entry(load_public_key(k.public_pem.encode()), caller.vendor_name, k.alg)
            for k in keys
        ],
    }


def vendor_count(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(Vendor)).scalar_one())
