"""Orders, licenses, activation (online and offline), suspension, revocation, renewal.

Activation is where the device limit is enforced, so it runs as one
transaction that first locks the license: ``SELECT ... FOR UPDATE`` on
PostgreSQL, the database write lock (``BEGIN IMMEDIATE``) on SQLite. Count,
match and insert then happen with no other activation of the same license
in between, which is what keeps 100 concurrent activations of a 5-device
license at exactly 5.

Re-activation: a device activating online derives its request's salt from
the license key (``license.licensekey.activation_salt``), so the same
machine presents the same component digests every time. A request whose
digests reach an active device's binding threshold *is* that device: it
gets a fresh license on its existing seat. A different machine cannot reach
the threshold (that is the binding), so it never shares a seat.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from modelseal.controlplane.errors import (
    ActivationRefusedError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
)
from modelseal.controlplane.models import Customer, Device, License, Plan, Vendor, new_id, now_s
from modelseal.controlplane.schemas import OrderCreate
from modelseal.controlplane.secretbox import SecretBox
from modelseal.controlplane.services import catalog
from modelseal.controlplane.services.vendors import (
    Caller,
    active_key_row,
    signing_key,
)
from modelseal.crypto import b64url
from modelseal.device import ActivationRequest
from modelseal.license import issue_license, jws, read_unverified
from modelseal.license.claims import LICENSE_TYP
from modelseal.license.errors import LicenseError
from modelseal.license.heartbeat import device_credential
from modelseal.license.licensekey import (
    LicenseKeyFormatError,
    activation_salt,
    generate_license_key,
    looks_like_license_key,
    normalize_license_key,
)

HEARTBEAT_PATH = "/v1/heartbeat"


# --- orders and licenses ---------------------------------------------------------------


def create_order(
    session: Session,
    box: SecretBox,
    caller: Caller,
    body: OrderCreate,
    *,
    idempotency_key: str | None = None,
) -> tuple[License, str]:
    """An order for one customer, one plan and some models yields a license and its key.

    With an ``Idempotency-Key`` the same order sent twice (a client retrying
    after a timeout or a server crash) returns the first license, never a
    second one.
    """
    if idempotency_key is not None:
        existing = session.execute(
            select(License).where(
                License.vendor_id == caller.vendor_id, License.idempotency_key == idempotency_key
            )
        ).scalar_one_or_none()
        if existing is not None:
            return existing, license_key_of(box, existing)
    customer = catalog.get_customer(session, caller, body.customer)
    plan = catalog.get_plan(session, caller, body.plan)
    models = [catalog.get_model(session, caller, ref) for ref in dict.fromkeys(body.models)]
    key = generate_license_key()
    start = now_s()
    lic_id = new_id("lic")
    row = License(
        id=lic_id,
        vendor_id=caller.vendor_id,
        customer_id=customer.id,
        plan_id=plan.id,
        model_ids=[m.id for m in models],
        key_hash=box.lookup_hash(key),
        key_sealed=box.seal(key.encode(), purpose="license_key", row=lic_id),
        status="active",
        starts_at=start,
        expires_at=None if plan.kind == "perpetual" else start + (plan.days or 0) * 86400,
        idempotency_key=idempotency_key,
        created_at=start,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except DBIntegrityError:
        raise ConflictError("an order with this idempotency key is being created") from None
    return row, key


def license_key_of(box: SecretBox, lic: License) -> str:
    return box.open(lic.key_sealed, purpose="license_key", row=lic.id).decode()


def get_license(session: Session, box: SecretBox, caller: Caller, ref: str) -> License:
    """By license id or by license key (as the customer reads it out)."""
    query = select(License).where(License.vendor_id == caller.vendor_id)
    if looks_like_license_key(ref):
        query = query.where(License.key_hash == box.lookup_hash(normalize_license_key(ref)))
    else:
        query = query.where(License.id == ref)
    row = session.execute(query).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no license {ref!r}")
    return row


def list_licenses(session: Session, caller: Caller, customer: str | None = None) -> list[License]:
    query = select(License).where(License.vendor_id == caller.vendor_id)
    if customer is not None:
        cust = catalog.get_customer(session, caller, customer)
        query = query.where(License.customer_id == cust.id)
    return list(session.execute(query.order_by(License.created_at, License.id)).scalars())


def device_counts(session: Session, vendor_id: str, license_ids: list[str]) -> dict[str, int]:
    if not license_ids:
        return {}
    rows = session.execute(
        select(Device.license_id, func.count())
        .where(
            Device.vendor_id == vendor_id,
            Device.license_id.in_(license_ids),
            Device.status != "deactivated",
        )
        .group_by(Device.license_id)
    ).all()
    return {lic: int(n) for lic, n in rows}


def set_status(session: Session, box: SecretBox, caller: Caller, ref: str, status: str) -> License:
    lic = get_license(session, box, caller, ref)
    if lic.status == "revoked" and status != "revoked":
        raise ConflictError("a revoked license stays revoked; issue a new order")
    lic.status = status
    return lic


def renew(session: Session, box: SecretBox, caller: Caller, ref: str, days: int) -> License:
    """Extend ``exp``; each device receives the renewed license with its next heartbeat."""
    lic = get_license(session, box, caller, ref)
    if lic.status == "revoked":
        raise ConflictError("a revoked license cannot be renewed")
    if lic.expires_at is None:
        raise ConflictError("a perpetual license does not expire")
    lic.expires_at = max(lic.expires_at, now_s()) + days * 86400
    return lic


def list_devices(
    session: Session, box: SecretBox, caller: Caller, license_ref: str | None = None
) -> list[Device]:
    query = select(Device).where(Device.vendor_id == caller.vendor_id)
    if license_ref is not None:
        query = query.where(Device.license_id == get_license(session, box, caller, license_ref).id)
    return list(session.execute(query.order_by(Device.activated_at, Device.id)).scalars())


def get_device(session: Session, caller: Caller, ref: str) -> Device:
    """By record id (``dev_...``), or by the binding's device id.

    A machine deactivated and activated again has several records with one
    device id (review finding: that was a 500): the active record is meant;
    with none active and several left, the reference is ambiguous (409).
    """
    base = select(Device).where(Device.vendor_id == caller.vendor_id)
    if catalog.looks_like_id(ref, "dev"):
        row = session.execute(base.where(Device.id == ref)).scalar_one_or_none()
        if row is not None:
            return row
    rows = list(
        session.execute(
            base.where(Device.device_id == ref).order_by(Device.activated_at, Device.id)
        ).scalars()
    )
    if not rows:
        raise NotFoundError(f"no device {ref!r}")
    current = [r for r in rows if r.status != "deactivated"]
    if len(current) == 1:
        return current[0]
    if len(rows) == 1:
        return rows[0]
    raise ConflictError(
        f"device id {ref!r} names {len(rows)} activations; use a record id:"
        f" {', '.join(r.id for r in rows)}"
    )


def deactivate_device(session: Session, caller: Caller, ref: str) -> Device:
    """Free the seat; the device is told REVOKED at its next heartbeat."""
    device = get_device(session, caller, ref)
    device.status = "deactivated"
    return device


def set_device_status(session: Session, caller: Caller, ref: str, status: str) -> Device:
    """Suspend one device (it keeps its seat, hears SUSPENDED and locks) or reinstate it."""
    device = get_device(session, caller, ref)
    if device.status == "deactivated":
        raise ConflictError("a deactivated device stays deactivated; activate it again")
    device.status = status
    return device


def clear_device_flag(session: Session, caller: Caller, ref: str) -> Device:
    """The vendor has looked at a flagged device (e.g. a reinstall lost its audit log).

    The stored audit head is forgotten too: the device's next report starts
    the chain the server follows afresh. So is the end of the shipped records:
    the device ships its log again from its first record (records the server
    already holds, same seq and hash, are not stored twice).
    """
    device = get_device(session, caller, ref)
    device.flag = None
    device.flagged_at = None
    device.audit_seq = None
    device.audit_hash = None
    device.events_seq = None
    device.events_hash = None
    return device


# --- activation ------------------------------------------------------------------------


def _lock_license(session: Session, key_hash: str | None, license_id: str | None) -> License:
    query = select(License)
    query = query.where(
        License.key_hash == key_hash if key_hash is not None else License.id == license_id
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.execute(query).scalar_one_or_none()
    if row is None:
        raise NotFoundError("no license with this key")
    return row


def _refuse_inactive(lic: License) -> None:
    if lic.status == "revoked":
        raise ActivationRefusedError("the license was revoked", code="REVOKED")
    if lic.status == "suspended":
        raise ActivationRefusedError("the license is suspended", code="SUSPENDED")
    if lic.expires_at is not None and lic.expires_at <= now_s():
        raise ActivationRefusedError("the license has expired", code="EXPIRED")


def _matching_device(devices: list[Device], request: ActivationRequest) -> Device | None:
    presented = {(c.kind, c.digest) for c in request.components}
    for device in devices:
        weight = sum(
            int(str(w))
            for kind, digest, w in device.components
            if (str(kind), str(digest)) in presented
        )
        if weight >= device.threshold:
            return device
    return None


def activate(
    session: Session,
    box: SecretBox,
    *,
    request_json: dict[str, Any],
    heartbeat_base_url: str,
    license_key: str | None = None,
    caller: Caller | None = None,
    license_ref: str | None = None,
) -> tuple[License, Device, str, bool, list[str]]:
    """Issue (or re-issue) the device-bound license for one activation request.

    Online: ``license_key`` from the device. Offline: an authenticated
    ``caller`` names the license and uploads the request file.
    Returns (license, device, token, reactivated, warnings).
    """
    try:
        request = ActivationRequest.from_json(request_json)
    except Exception as exc:  # RequestFormatError and friends: all ModelsealErrors
        raise InvalidRequestError(str(exc)) from None
    if license_key is not None:
        try:
            key = normalize_license_key(license_key)
        except LicenseKeyFormatError as exc:
            raise InvalidRequestError(str(exc)) from None
        lic = _lock_license(session, box.lookup_hash(key), None)
    else:
        assert caller is not None
        assert license_ref is not None
        lic = get_license(session, box, caller, license_ref)
        lic = _lock_license(session, None, lic.id)
        key = license_key_of(box, lic)
    if request.salt != b64url(activation_salt(key)):
        raise ActivationRefusedError(
            "the activation request was not made for this license key: create it with"
            " 'modelseal device activate --key KEY' (online) or '--request-out' (offline)",
            code="REQUEST_NOT_FOR_THIS_KEY",
        )
    _refuse_inactive(lic)
    plan = session.get(Plan, lic.plan_id)
    assert plan is not None
    devices = list(
        session.execute(
            select(Device).where(Device.license_id == lic.id, Device.status != "deactivated")
        ).scalars()
    )
    existing = _matching_device(devices, request)
    if existing is not None:
        # A reinstall gets back the license its seat already holds, unchanged.
        # The component digests it matched on are public (every copy of the
        # license carries them), so the match proves nothing about who asks:
        # re-issuing here would wrap the content keys under the caller's own
        # secrets and replace the seat's heartbeat credential, handing a copied
        # license a working seat on any machine (review finding). The stored
        # token opens only where the bound components are.
        return lic, existing, existing.token, True, []
    if plan.max_devices is not None and len(devices) >= plan.max_devices:
        raise ActivationRefusedError(
            f"the license is active on {len(devices)} of {plan.max_devices} devices",
            code="TOO_MANY_DEVICES",
        )
    token, device_id_, credential, unlock, warnings = _issue_for_device(
        session, box, lic, plan, request, heartbeat_base_url
    )
    record_id = new_id("dev")
    sealed_credential = box.seal(credential, purpose="device_credential", row=record_id)
    sealed_unlock = (
        box.seal(unlock, purpose="unlock_seed", row=record_id) if unlock is not None else None
    )
    claims = read_unverified(token)[1]
    # the weights the issuer assigned (its table of kinds), never the request's labels
    components = [[c["kind"], c["digest"], c["weight"]] for c in claims["device"]["components"]]
    threshold = int(claims["device"]["threshold"])
    token_exp = claims.get("exp")
    device = Device(
        id=record_id,
        vendor_id=lic.vendor_id,
        license_id=lic.id,
        device_id=device_id_,
        label=request.label,
        components=components,
        threshold=threshold,
        status="active",
        credential_sealed=sealed_credential,
        unlock_seed_sealed=sealed_unlock,
        token=token,
        token_exp=token_exp,
        activated_at=now_s(),
        calls_used=0,
    )
    session.add(device)
    return lic, device, token, False, warnings


def _issue_for_device(
    session: Session,
    box: SecretBox,
    lic: License,
    plan: Plan,
    request: ActivationRequest,
    heartbeat_base_url: str,
) -> tuple[str, str, bytes, bytes | None, list[str]]:
    vendor = session.get(Vendor, lic.vendor_id)
    customer = session.get(Customer, lic.customer_id)
    assert vendor is not None
    assert customer is not None
    caller = Caller(vendor_id=vendor.id, vendor_name=vendor.name, role="issuer", token_id="")
    models = [catalog.get_model(session, caller, mid) for mid in lic.model_ids]
    keys = [(catalog.content_key(box, m), m.model_id) for m in models]
    key = signing_key(box, active_key_row(session, vendor.id))
    kek = os.urandom(32)
    start = datetime.fromtimestamp(lic.starts_at, UTC)
    try:
        issued = issue_license(
            signing_key=key,
            issuer=vendor.name,
            customer=customer.name,
            audience=sorted({m.model_id for m in models}),
            request=request,
            content_keys=keys,
            not_before=start,
            valid_for=None
            if lic.expires_at is None
            else timedelta(seconds=lic.expires_at - lic.starts_at),
            plan=plan.kind,  # type: ignore[arg-type]
            features=plan.features,
            max_calls=plan.max_calls,
            max_devices=plan.max_devices,
            offline_calls=offline_allowance(plan),
            grace=timedelta(seconds=plan.grace_seconds) if plan.grace_seconds is not None else None,
            heartbeat_url=heartbeat_base_url + HEARTBEAT_PATH if plan.heartbeat_interval else None,
            heartbeat_interval=plan.heartbeat_interval or 3600,
            threshold=plan.threshold,
            allow_vm=plan.allow_vm,
            allow_container=plan.allow_container,
            strict_binding=plan.strict_binding,
            license_id=lic.id,
            kek=kek,
        )
    except LicenseError as exc:
        raise ActivationRefusedError(str(exc), code=exc.reason.upper()) from None
    assert issued.claims.device is not None
    credential = device_credential(kek, jti=lic.id)
    return (
        issued.token,
        issued.claims.device.device_id,
        credential,
        issued.unlock_seed,
        list(issued.warnings),
    )


#: the offline allowance of a plan that names none: enough for a service to
#: start and serve until its first heartbeat brings a lease
DEFAULT_OFFLINE_CALLS = 100


def offline_allowance(plan: Plan) -> int | None:
    """``limits.offline_calls`` for the plan's licenses: set (leases) when the server counts.

    The server's ledger is authoritative for a license with a call quota and
    a heartbeat; without either there is nothing to lease.
    """
    if plan.max_calls is None or not plan.heartbeat_interval:
        return None
    if plan.offline_calls is not None:
        return min(plan.offline_calls, plan.max_calls)
    return min(DEFAULT_OFFLINE_CALLS, plan.max_calls)


def renewed_token(session: Session, box: SecretBox, lic: License, device: Device) -> str | None:
    """The device's license re-signed with the license's current ``exp``, if it changed.

    The key delivery (shares, wrapped content keys) does not depend on
    ``exp``, so renewal re-signs the same claims: no device secret is needed,
    and the server never stored one.
    """
    _, claims = read_unverified(device.token)
    if claims.get("exp") == lic.expires_at:
        return None
    claims = dict(claims)
    claims["exp"] = lic.expires_at
    claims["iat"] = now_s()
    if lic.expires_at is None:
        claims.pop("exp", None)
    key = signing_key(box, active_key_row(session, lic.vendor_id))
    token = jws.encode(
        claims, key, alg=key.default_algorithm, headers={"typ": LICENSE_TYP, "kid": key.key_id}
    )
    device.token = token
    device.token_exp = lic.expires_at
    return token


def revocation_list(
    session: Session, box: SecretBox, caller: Caller, *, valid_days: int = 7
) -> str:
    """Revoked licenses and deactivated devices, signed, for sites no heartbeat reaches."""
    from modelseal.license.heartbeat import RevocationList, sign_revocations

    licenses = session.execute(
        select(License.id).where(License.vendor_id == caller.vendor_id, License.status == "revoked")
    ).scalars()
    devices = session.execute(
        select(Device.license_id, Device.device_id).where(
            # a suspended device is not revoked: the list revokes for good
            Device.vendor_id == caller.vendor_id,
            Device.status == "deactivated",
        )
    ).all()
    now = now_s()
    rl = RevocationList(
        issuer=caller.vendor_name,
        issued_at=now,
        next_update=now + valid_days * 86400,
        licenses=frozenset(licenses),
        devices=frozenset((lic, dev) for lic, dev in devices),
    )
    return sign_revocations(rl, signing_key(box, active_key_row(session, caller.vendor_id)))
