"""Plans, customers and models: what a vendor sells, to whom, and which sealed files."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from modelseal.controlplane.errors import ConflictError, InvalidRequestError, NotFoundError
from modelseal.controlplane.models import Customer, Device, License, Model, Plan, new_id, now_s
from modelseal.controlplane.schemas import CustomerCreate, ModelCreate, PlanCreate
from modelseal.controlplane.secretbox import SecretBox
from modelseal.controlplane.services.vendors import Caller
from modelseal.crypto import ContentKey, b64url_decode
from modelseal.errors import ModelsealError

_Row = TypeVar("_Row")
#: what ``models.new_id`` makes: a kind prefix and 24 hex digits
_ID = re.compile(r"^(pln|cus|mdl|lic|dev)_[0-9a-f]{24}$")


def looks_like_id(ref: str, prefix: str) -> bool:
    return ref.startswith(prefix + "_") and _ID.fullmatch(ref) is not None


def _refuse_id_like_name(name: str, prefix: str, what: str) -> None:
    """A name shaped like an id would make ``--plan NAME`` mean two objects (review finding)."""
    if _ID.fullmatch(name) is not None:
        raise InvalidRequestError(f"a {what} name cannot look like an object id ({name!r})")


def _by_id_or_name(
    session: Session, caller: Caller, table: Any, ref: str, prefix: str, what: str
) -> Any:
    """An id when ``ref`` is shaped like one of this kind, else a name: never both at once.

    Ids are ``pln_``/``cus_`` plus 24 hex digits and names of that shape are
    refused at creation, so one reference names at most one object. A name
    stored before that rule still resolves by name when no id matches.
    """
    base = select(table).where(table.vendor_id == caller.vendor_id)
    if looks_like_id(ref, prefix):
        row = session.execute(base.where(table.id == ref)).scalar_one_or_none()
        if row is not None:
            return row
    row = session.execute(base.where(table.name == ref)).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no {what} {ref!r}")
    return row


def _insert(session: Session, row: _Row, what: str) -> _Row:
    try:
        with session.begin_nested():
            session.add(row)
    except DBIntegrityError:
        raise ConflictError(f"{what} already exists") from None
    return row


def create_plan(session: Session, caller: Caller, body: PlanCreate) -> Plan:
    if body.kind in ("trial", "subscription") and body.days is None:
        raise InvalidRequestError(f"a {body.kind} plan needs days")
    if body.kind == "perpetual" and body.days is not None:
        raise InvalidRequestError("a perpetual plan has no days")
    if body.grace_seconds is not None and body.heartbeat_interval is None:
        raise InvalidRequestError("an offline grace needs a heartbeat interval")
    _refuse_id_like_name(body.name, "pln", "plan")
    features = sorted(set(body.features))
    if any(not f or len(f) > 64 or not f.isprintable() for f in features):
        raise InvalidRequestError("features are 1..64 printable characters each")
    row = Plan(
        id=new_id("pln"),
        vendor_id=caller.vendor_id,
        created_at=now_s(),
        **{**body.model_dump(), "features": features},
    )
    return _insert(session, row, f"plan {body.name!r}")


def list_plans(session: Session, caller: Caller) -> list[Plan]:
    q = select(Plan).where(Plan.vendor_id == caller.vendor_id).order_by(Plan.created_at, Plan.id)
    return list(session.execute(q).scalars())


def get_plan(session: Session, caller: Caller, ref: str) -> Plan:
    row: Plan = _by_id_or_name(session, caller, Plan, ref, "pln", "plan")
    return row


def set_plan_max_devices(session: Session, caller: Caller, ref: str, limit: int | None) -> Plan:
    """Change a plan's device limit for its licenses, issued ones included.

    The limit is the server's to enforce (activation, and each heartbeat
    ranks the seats oldest first), so no license needs re-issuing; the
    ``limits.devices`` claim of licenses already issued keeps the old number
    and is informational.
    """
    plan = get_plan(session, caller, ref)
    plan.max_devices = limit
    return plan


def create_customer(session: Session, caller: Caller, body: CustomerCreate) -> Customer:
    _refuse_id_like_name(body.name, "cus", "customer")
    row = Customer(id=new_id("cus"), vendor_id=caller.vendor_id, name=body.name, created_at=now_s())
    return _insert(session, row, f"customer {body.name!r}")


def list_customers(session: Session, caller: Caller) -> list[Customer]:
    q = select(Customer).where(Customer.vendor_id == caller.vendor_id)
    return list(session.execute(q.order_by(Customer.created_at, Customer.id)).scalars())


def get_customer(session: Session, caller: Caller, ref: str) -> Customer:
    row: Customer = _by_id_or_name(session, caller, Customer, ref, "cus", "customer")
    return row


def customer_usage(session: Session, caller: Caller, ref: str) -> dict[str, Any]:
    """The server's ledger for one customer, in total and per license.

    ``calls_leased`` is the ledger the quota is enforced on (calls leased to
    devices plus calls they reported beyond their leases); ``calls_used`` is
    what the devices reported spending.
    """
    customer = get_customer(session, caller, ref)
    licenses = session.execute(
        select(License.id, License.calls_leased, Plan.max_calls)
        .join(Plan, Plan.id == License.plan_id)
        .where(License.vendor_id == caller.vendor_id, License.customer_id == customer.id)
        .order_by(License.created_at, License.id)
    ).all()
    per_device = {
        lic_id: (int(n), int(calls), int(over))
        for lic_id, n, calls, over in session.execute(
            select(
                Device.license_id,
                func.count(Device.id),
                func.coalesce(func.sum(Device.calls_used), 0),
                # reported beyond leases and not charged yet (charged at the next lease)
                func.coalesce(
                    func.sum(
                        case(
                            (
                                Device.calls_used > Device.lease_end,
                                Device.calls_used - Device.lease_end,
                            ),
                            else_=0,
                        )
                    ),
                    0,
                ),
            )
            .join(License, License.id == Device.license_id)
            .where(
                Device.vendor_id == caller.vendor_id,
                License.customer_id == customer.id,
                Device.status != "deactivated",
            )
            .group_by(Device.license_id)
        ).all()
    }
    by_license = []
    for lic_id, leased, max_calls in licenses:
        devices, calls, over = per_device.get(lic_id, (0, 0, 0))
        by_license.append(
            {
                "license_id": lic_id,
                "max_calls": max_calls,
                "calls_leased": int(leased) + over,
                "calls_used": calls,
                "devices": devices,
            }
        )
    return {
        "customer_id": customer.id,
        "licenses": len(by_license),
        "devices": sum(b["devices"] for b in by_license),
        "calls_used": sum(b["calls_used"] for b in by_license),
        "calls_leased": sum(b["calls_leased"] for b in by_license),
        "by_license": by_license,
    }


def create_model(session: Session, box: SecretBox, caller: Caller, body: ModelCreate) -> Model:
    """Register a sealed model by its header's ids and its content key (stored sealed).

    The content key must be the one the header names (its RFC 7638
    thumbprint is the header's ``key_id``): a wrong key is refused here,
    not discovered by a customer whose model will not open.
    """
    try:
        raw = b64url_decode(body.content_key)
        key = ContentKey(raw)
    except (ValueError, TypeError, ModelsealError):
        raise InvalidRequestError("content_key must be base64url of 32 bytes") from None
    if key.key_id != body.key_id:
        raise InvalidRequestError(
            "the content key is not the key this model was sealed with (key_id differs)"
        )
    model_row_id = new_id("mdl")
    row = Model(
        id=model_row_id,
        vendor_id=caller.vendor_id,
        model_id=body.model_id,
        key_id=body.key_id,
        name=body.name or body.model_id,
        framework=body.framework,
        content_key_sealed=box.seal(key.raw(), purpose="content_key", row=model_row_id),
        created_at=now_s(),
    )
    return _insert(session, row, f"model {body.model_id!r} with key {body.key_id}")


def list_models(session: Session, caller: Caller) -> list[Model]:
    q = select(Model).where(Model.vendor_id == caller.vendor_id)
    return list(session.execute(q.order_by(Model.created_at, Model.id)).scalars())


def get_model(session: Session, caller: Caller, ref: str) -> Model:
    row = session.execute(
        select(Model).where(Model.vendor_id == caller.vendor_id, Model.id == ref)
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no model {ref!r}")
    return row


def content_key(box: SecretBox, model: Model) -> ContentKey:
    return ContentKey(box.open(model.content_key_sealed, purpose="content_key", row=model.id))
