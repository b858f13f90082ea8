"""The vendor's API: tokens, keys, plans, customers, models, orders, licenses, devices."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from modelseal.controlplane import schemas as s
from modelseal.controlplane.deps import DB, Issuer, Owner, Reader, State
from modelseal.controlplane.models import ApiToken, Customer, Device, License, Model, Plan
from modelseal.controlplane.routes import AUTH, errors
from modelseal.controlplane.services import catalog, licensing, vendors

router = APIRouter(prefix="/v1", tags=["admin"], responses=errors(*AUTH))
Ref = Annotated[str, "an id, a name (plans, customers) or a license key (licenses)"]


def _token(row: ApiToken) -> s.TokenOut:
    return s.TokenOut(
        id=row.id,
        name=row.name,
        role=row.role,  # type: ignore[arg-type]
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _plan(row: Plan) -> s.PlanOut:
    return s.PlanOut.model_validate(row, from_attributes=True)


def _customer(row: Customer) -> s.CustomerOut:
    return s.CustomerOut.model_validate(row, from_attributes=True)


def _model(row: Model) -> s.ModelOut:
    return s.ModelOut.model_validate(row, from_attributes=True)


def _license(row: License, devices: int) -> s.LicenseOut:
    return s.LicenseOut(
        id=row.id,
        customer_id=row.customer_id,
        plan_id=row.plan_id,
        models=list(row.model_ids),
        status=row.status,  # type: ignore[arg-type]
        starts_at=row.starts_at,
        expires_at=row.expires_at,
        created_at=row.created_at,
        devices=devices,
        calls_leased=row.calls_leased,
    )


def _device(row: Device) -> s.DeviceOut:
    return s.DeviceOut.model_validate(row, from_attributes=True)


# --- vendor, tokens, keys ------------------------------------------------------------------


@router.get("/vendor", response_model=s.VendorOut)
def whoami(who: Reader) -> s.VendorOut:
    return s.VendorOut(id=who.vendor_id, name=who.vendor_name, role=who.role)  # type: ignore[arg-type]


@router.get("/tokens", response_model=list[s.TokenOut])
def list_tokens(db: DB, who: Owner) -> list[s.TokenOut]:
    return [_token(t) for t in vendors.list_tokens(db, who)]


@router.post("/tokens", response_model=s.TokenCreated, status_code=201)
def create_token(body: s.TokenCreate, db: DB, who: Owner) -> s.TokenCreated:
    row, token = vendors.new_token(db, who.vendor_id, name=body.name, role=body.role)
    return s.TokenCreated(**_token(row).model_dump(), token=token)


@router.post("/tokens/{token_id}/revoke", response_model=s.TokenOut, responses=errors(404))
def revoke_token(token_id: str, db: DB, who: Owner) -> s.TokenOut:
    return _token(vendors.revoke_token(db, who, token_id))


@router.get("/keys", response_model=list[s.KeyOut])
def list_keys(db: DB, who: Reader) -> list[s.KeyOut]:
    return [s.KeyOut.model_validate(k, from_attributes=True) for k in vendors.list_keys(db, who)]


@router.post("/keys/rotate", response_model=s.KeyOut, status_code=201)
def rotate_key(
    st: State,
    db: DB,
    who: Owner,
    kty: Annotated[str | None, Query(pattern="^(ed25519|rsa|sm2)$")] = None,
    store: Annotated[str, Query(pattern="^(database|hsm)$")] = "database",
) -> s.KeyOut:
    """A new signing key: sealed in the database, or made in the PKCS#11 token (``hsm``)."""
    row = vendors.rotate_key(db, st.box, who, kty, store=store)
    return s.KeyOut.model_validate(row, from_attributes=True)


@router.get(
    "/keys/trust",
    responses={
        200: {
            "content": {"application/json": {}, "application/x-pem-file": {}},
            "description": "a JSON trust file (default) or PEM blocks (format=pem)",
        }
    },
)
def trust_set(
    db: DB, who: Reader, format: Annotated[str, Query(pattern="^(json|pem)$")] = "json"
) -> Response:
    """Every public key of the vendor: a trust file pinning each to this vendor (default),
    or PEM blocks (``format=pem``)."""
    if format == "pem":
        return PlainTextResponse(
            vendors.trust_set_pem(db, who), media_type="application/x-pem-file"
        )
    return JSONResponse(vendors.trust_file(db, who))


@router.get(
    "/revocations",
    response_class=PlainTextResponse,
    responses={200: {"content": {"application/jwt": {}}, "description": "signed list (JWS)"}},
)
def revocations(
    st: State, db: DB, who: Reader, days: Annotated[int, Query(ge=1, le=365)] = 7
) -> PlainTextResponse:
    """Revoked licenses and devices, signed, for air-gapped sites (``Guard.import_revocations``)."""
    token = licensing.revocation_list(db, st.box, who, valid_days=days)
    return PlainTextResponse(token, media_type="application/jwt")


# --- catalog ---------------------------------------------------------------------------


@router.post("/plans", response_model=s.PlanOut, status_code=201, responses=errors(409))
def create_plan(body: s.PlanCreate, db: DB, who: Issuer) -> s.PlanOut:
    return _plan(catalog.create_plan(db, who, body))


@router.get("/plans", response_model=list[s.PlanOut])
def list_plans(db: DB, who: Reader) -> list[s.PlanOut]:
    return [_plan(p) for p in catalog.list_plans(db, who)]


@router.get("/plans/{ref}", response_model=s.PlanOut, responses=errors(404))
def get_plan(ref: str, db: DB, who: Reader) -> s.PlanOut:
    return _plan(catalog.get_plan(db, who, ref))


@router.patch("/plans/{ref}", response_model=s.PlanOut, responses=errors(404))
def set_plan_limits(ref: str, body: s.PlanLimitsIn, db: DB, who: Issuer) -> s.PlanOut:
    """Raise or lower a plan's device limit; lowered, the newest seats hear TOO_MANY_DEVICES."""
    return _plan(catalog.set_plan_max_devices(db, who, ref, body.max_devices))


@router.post("/customers", response_model=s.CustomerOut, status_code=201, responses=errors(409))
def create_customer(body: s.CustomerCreate, db: DB, who: Issuer) -> s.CustomerOut:
    return _customer(catalog.create_customer(db, who, body))


@router.get("/customers", response_model=list[s.CustomerOut])
def list_customers(db: DB, who: Reader) -> list[s.CustomerOut]:
    return [_customer(c) for c in catalog.list_customers(db, who)]


@router.get("/customers/{ref}", response_model=s.CustomerOut, responses=errors(404))
def get_customer(ref: str, db: DB, who: Reader) -> s.CustomerOut:
    return _customer(catalog.get_customer(db, who, ref))


@router.get("/customers/{ref}/usage", response_model=s.UsageOut, responses=errors(404))
def customer_usage(ref: str, db: DB, who: Reader) -> s.UsageOut:
    return s.UsageOut(**catalog.customer_usage(db, who, ref))


@router.post("/models", response_model=s.ModelOut, status_code=201, responses=errors(409))
def create_model(body: s.ModelCreate, st: State, db: DB, who: Issuer) -> s.ModelOut:
    return _model(catalog.create_model(db, st.box, who, body))


@router.get("/models", response_model=list[s.ModelOut])
def list_models(db: DB, who: Reader) -> list[s.ModelOut]:
    return [_model(m) for m in catalog.list_models(db, who)]


@router.get("/models/{ref}", response_model=s.ModelOut, responses=errors(404))
def get_model(ref: str, db: DB, who: Reader) -> s.ModelOut:
    return _model(catalog.get_model(db, who, ref))


# --- orders and licenses ---------------------------------------------------------------------


@router.post("/orders", response_model=s.OrderOut, status_code=201, responses=errors(404, 409))
def create_order(
    body: s.OrderCreate,
    st: State,
    db: DB,
    who: Issuer,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> s.OrderOut:
    """Turn an order into a license and its license key (shown here and by ``licenses key``)."""
    lic, key = licensing.create_order(db, st.box, who, body, idempotency_key=idempotency_key)
    counts = licensing.device_counts(db, who.vendor_id, [lic.id])
    return s.OrderOut(**_license(lic, counts.get(lic.id, 0)).model_dump(), license_key=key)


@router.get("/licenses", response_model=list[s.LicenseOut], responses=errors(404))
def list_licenses(
    db: DB, who: Reader, customer: Annotated[str | None, Query(max_length=200)] = None
) -> list[s.LicenseOut]:
    rows = licensing.list_licenses(db, who, customer)
    counts = licensing.device_counts(db, who.vendor_id, [r.id for r in rows])
    return [_license(r, counts.get(r.id, 0)) for r in rows]


def _one(db: DB, st: State, who: Reader, lic: License) -> s.LicenseOut:
    return _license(lic, licensing.device_counts(db, who.vendor_id, [lic.id]).get(lic.id, 0))


@router.get("/licenses/{ref}", response_model=s.LicenseOut, responses=errors(404))
def get_license(ref: str, st: State, db: DB, who: Reader) -> s.LicenseOut:
    return _one(db, st, who, licensing.get_license(db, st.box, who, ref))


@router.get("/licenses/{ref}/key", response_model=s.LicenseKeyOut, responses=errors(404))
def license_key(ref: str, st: State, db: DB, who: Issuer) -> s.LicenseKeyOut:
    lic = licensing.get_license(db, st.box, who, ref)
    return s.LicenseKeyOut(license_id=lic.id, license_key=licensing.license_key_of(st.box, lic))


@router.post("/licenses/{ref}/revoke", response_model=s.LicenseOut, responses=errors(404, 409))
def revoke(ref: str, st: State, db: DB, who: Issuer) -> s.LicenseOut:
    return _one(db, st, who, licensing.set_status(db, st.box, who, ref, "revoked"))


@router.post("/licenses/{ref}/suspend", response_model=s.LicenseOut, responses=errors(404, 409))
def suspend(ref: str, st: State, db: DB, who: Issuer) -> s.LicenseOut:
    return _one(db, st, who, licensing.set_status(db, st.box, who, ref, "suspended"))


@router.post("/licenses/{ref}/reinstate", response_model=s.LicenseOut, responses=errors(404, 409))
def reinstate(ref: str, st: State, db: DB, who: Issuer) -> s.LicenseOut:
    return _one(db, st, who, licensing.set_status(db, st.box, who, ref, "active"))


@router.post("/licenses/{ref}/renew", response_model=s.LicenseOut, responses=errors(404, 409))
def renew(ref: str, body: s.RenewIn, st: State, db: DB, who: Issuer) -> s.LicenseOut:
    return _one(db, st, who, licensing.renew(db, st.box, who, ref, body.days))


@router.post(
    "/licenses/{ref}/activate-offline",
    response_model=s.ActivationOut,
    status_code=201,
    responses=errors(404, 409),
)
def activate_offline(
    ref: str, body: s.OfflineActivationIn, st: State, db: DB, who: Issuer
) -> s.ActivationOut:
    """Activate an air-gapped device from its request file (``device activate --request-out``)."""
    lic, device, token, again, warnings = licensing.activate(
        db,
        st.box,
        request_json=body.request,
        heartbeat_base_url=st.settings.heartbeat_base_url,
        caller=who,
        license_ref=ref,
    )
    return s.ActivationOut(
        license_id=lic.id,
        device=device.id,
        device_id=device.device_id,
        license=token,
        reactivated=again,
        warnings=warnings,
    )


@router.get("/licenses/{ref}/devices", response_model=list[s.DeviceOut], responses=errors(404))
def license_devices(ref: str, st: State, db: DB, who: Reader) -> list[s.DeviceOut]:
    return [_device(d) for d in licensing.list_devices(db, st.box, who, ref)]


@router.get("/devices", response_model=list[s.DeviceOut])
def list_devices(st: State, db: DB, who: Reader) -> list[s.DeviceOut]:
    return [_device(d) for d in licensing.list_devices(db, st.box, who)]


@router.get("/devices/{ref}", response_model=s.DeviceOut, responses=errors(404, 409))
def get_device(ref: str, db: DB, who: Reader) -> s.DeviceOut:
    return _device(licensing.get_device(db, who, ref))


@router.get(
    "/devices/{ref}/license",
    response_class=PlainTextResponse,
    responses={**errors(404), 200: {"content": {"application/jwt": {}}, "description": "JWS"}},
)
def download_license(ref: str, db: DB, who: Issuer) -> PlainTextResponse:
    """The device's current license (it opens only on that device)."""
    return PlainTextResponse(licensing.get_device(db, who, ref).token, media_type="application/jwt")


@router.post("/devices/{ref}/deactivate", response_model=s.DeviceOut, responses=errors(404))
def deactivate(ref: str, db: DB, who: Issuer) -> s.DeviceOut:
    return _device(licensing.deactivate_device(db, who, ref))


@router.post("/devices/{ref}/suspend", response_model=s.DeviceOut, responses=errors(404, 409))
def suspend_device(ref: str, db: DB, who: Issuer) -> s.DeviceOut:
    """Suspend one device: it keeps its seat, hears SUSPENDED and locks until reinstated."""
    return _device(licensing.set_device_status(db, who, ref, "suspended"))


@router.post("/devices/{ref}/reinstate", response_model=s.DeviceOut, responses=errors(404, 409))
def reinstate_device(ref: str, db: DB, who: Issuer) -> s.DeviceOut:
    return _device(licensing.set_device_status(db, who, ref, "active"))


@router.post("/devices/{ref}/clear-flag", response_model=s.DeviceOut, responses=errors(404, 409))
def clear_device_flag(ref: str, db: DB, who: Issuer) -> s.DeviceOut:
    """Accept a flagged device again (e.g. a reinstall that lost its audit log)."""
    return _device(licensing.clear_device_flag(db, who, ref))
