"""Plans, customers and models: what a vendor sells, to whom, and which sealed files."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import func, select
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
    row = session.execute(
        select(Plan).where(
            Plan.vendor_id == caller.vendor_id, (Plan.id == ref) | (Plan.name == ref)
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no plan {ref!r}")
    return row


def create_customer(session: Session, caller: Caller, body: CustomerCreate) -> Customer:
    row = Customer(id=new_id("cus"), vendor_id=caller.vendor_id, name=body.name, created_at=now_s())
    return _insert(session, row, f"customer {body.name!r}")


def list_customers(session: Session, caller: Caller) -> list[Customer]:
    q = select(Customer).where(Customer.vendor_id == caller.vendor_id)
    return list(session.execute(q.order_by(Customer.created_at, Customer.id)).scalars())


def get_customer(session: Session, caller: Caller, ref: str) -> Customer:
    row = session.execute(
        select(Customer).where(
            Customer.vendor_id == caller.vendor_id, (Customer.id == ref) | (Customer.name == ref)
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no customer {ref!r}")
    return row


def customer_usage(session: Session, caller: Caller, ref: str) -> dict[str, Any]:
    """The server's ledger for one customer: licenses, active devices, calls reported."""
    customer = get_customer(session, caller, ref)
    licenses = session.execute(
        select(func.count())
        .select_from(License)
        .where(License.vendor_id == caller.vendor_id, License.customer_id == customer.id)
    ).scalar_one()
    devices, calls = session.execute(
        select(func.count(Device.id), func.coalesce(func.sum(Device.calls_used), 0))
        .join(License, License.id == Device.license_id)
        .where(
            Device.vendor_id == caller.vendor_id,
            License.customer_id == customer.id,
            Device.status == "active",
        )
    ).one()
    return {
        "customer_id": customer.id,
        "licenses": int(licenses),
        "devices": int(devices),
        "calls_used": int(calls),
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
