"""The Licensing pages: dashboard, customers, plans, sealed models, orders, licenses,
devices, offline activation, the audit log, webhooks and reports.

Every action calls the same service function the API route calls, with the
API's own input schema (``web.build``), after the API's role rule
(``web.allow``): the console adds pages, not rules.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from modelseal.controlplane import schemas as s
from modelseal.controlplane.console.web import (
    ISSUERS,
    OWNERS,
    PREFIX,
    Form,
    FormProblem,
    Me,
    Viewer,
    allow,
    attempt,
    build,
    download,
    json_block,
    listed,
    optional_int,
    page,
    problem,
    redirect,
    text,
    upload_text,
)
from modelseal.controlplane.deps import DB, State, client_address
from modelseal.controlplane.errors import ControlPlaneError, NotFoundError
from modelseal.controlplane.services import (
    audit,
    catalog,
    dashboard,
    licensing,
    reports,
    unlock,
    webhooks,
)
from modelseal.crypto import ContentKey, b64url
from modelseal.errors import ModelsealError

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def outcome(done: object, ok: str) -> dict[str, Any]:
    """A page's error/notice/status from an ``attempt``: a string is the refusal."""
    if isinstance(done, str):
        return {"error": done, "status": 422}
    return {"notice": ok}


#: What a page says after the redirect that answered a successful form
#: (Post/Redirect/Get: a reload shows the page again and changes nothing).
#: Only these texts: the query names one, it never carries text of its own.
NOTICES = {
    "customer-added": "Customer added.",
    "plan-added": "Plan added.",
    "model-registered": "Model registered.",
    "issued": "License issued.",
    "renew": "Done: renew.",
    "suspend": "Done: suspend.",
    "revoke": "Done: revoke.",
    "reinstate": "Done: reinstate.",
}


def done_redirect(where: str, done: str) -> Response:
    return redirect(f"{where}?done={done}")


def notice_of(request: Request) -> dict[str, Any]:
    notice = NOTICES.get(request.query_params.get("done", ""))
    return {"notice": notice} if notice else {}


def _not_found(request: Request, me: Viewer, exc: ControlPlaneError) -> HTMLResponse:
    return problem(request, me, str(exc), status=exc.status_code, title="Not found")


# --- dashboard ------------------------------------------------------------------------------


@router.get("/")
def home(request: Request, db: DB, me: Me) -> Response:
    figures = dashboard.figures(db, me.who.vendor_id)
    charts = {
        "licenses": {
            "labels": list(figures["licenses_by_status"]),
            "values": list(figures["licenses_by_status"].values()),
        },
        "activations": figures["activations"],
        "heartbeats": figures["heartbeats"],
    }
    return page(request, "dashboard.html", me, f=figures, charts=json_block(charts))


@router.get("/dashboard.json")
def home_figures(db: DB, me: Me) -> Response:
    """The same figures as JSON, for a person's own scripts (with their session)."""
    return Response(
        json.dumps(dashboard.figures(db, me.who.vendor_id)), media_type="application/json"
    )


# --- customers, plans, sealed models -----------------------------------------------------


def _catalog_page(
    request: Request, db: Session, me: Viewer, name: str, done: object = None, ok: str = ""
) -> Response:
    lists: dict[str, Callable[[], Any]] = {
        "customers": lambda: catalog.list_customers(db, me.who),
        "plans": lambda: catalog.list_plans(db, me.who),
        "models": lambda: catalog.list_models(db, me.who),
    }
    extra = outcome(done, ok) if done is not None else notice_of(request)
    return page(request, f"{name}.html", me, rows=lists[name](), **extra)


def _catalog_answer(
    request: Request, db: Session, me: Viewer, name: str, done: object, notice: str
) -> Response:
    """A refused form is shown again with its error; an accepted one is redirected."""
    if isinstance(done, str):
        return _catalog_page(request, db, me, name, done)
    return done_redirect(f"{PREFIX}/{name}", notice)


@router.get("/customers")
def customers(request: Request, db: DB, me: Me) -> Response:
    return _catalog_page(request, db, me, "customers")


@router.post("/customers")
def customers_add(request: Request, db: DB, me: Me, form: Form) -> Response:
    allow(me, *ISSUERS)
    done = attempt(
        db,
        lambda: catalog.create_customer(
            db, me.who, build(s.CustomerCreate, {"name": text(form, "name")})
        ),
    )
    return _catalog_answer(request, db, me, "customers", done, "customer-added")


@router.get("/plans")
def plans(request: Request, db: DB, me: Me) -> Response:
    return _catalog_page(request, db, me, "plans")


def _plan_in(form: Any) -> s.PlanCreate:
    values: dict[str, Any] = {"name": text(form, "name"), "kind": text(form, "kind") or None}
    for name, what in (
        ("days", "Days"),
        ("max_devices", "Max devices"),
        ("max_calls", "Max calls"),
        ("grace_seconds", "Grace seconds"),
    ):
        values[name] = optional_int(form, name, what)
    values["features"] = listed(form, "features")
    return build(s.PlanCreate, {k: v for k, v in values.items() if v is not None})


@router.post("/plans")
def plans_add(request: Request, db: DB, me: Me, form: Form) -> Response:
    allow(me, *ISSUERS)
    done = attempt(db, lambda: catalog.create_plan(db, me.who, _plan_in(form)))
    return _catalog_answer(request, db, me, "plans", done, "plan-added")


@router.get("/models")
def models(request: Request, db: DB, me: Me) -> Response:
    return _catalog_page(request, db, me, "models")


def _model_in(form: Any) -> dict[str, Any]:
    jwk = upload_text(form, "key_file", "the key file", limit=16 * 1024)
    values = {
        "model_id": text(form, "model_id"),
        "name": text(form, "name") or None,
        "framework": text(form, "framework") or None,
    }
    if jwk:
        try:
            key = ContentKey.from_jwk(json.loads(jwk))
        except (ValueError, ModelsealError) as exc:
            raise FormProblem(f"the key file is not a content key: {exc}") from None
        values |= {"key_id": key.key_id, "content_key": b64url(key.raw())}
    else:
        values |= {"key_id": text(form, "key_id"), "content_key": text(form, "content_key")}
    return values


@router.post("/models")
def models_add(request: Request, st: State, db: DB, me: Me, form: Form) -> Response:
    allow(me, *ISSUERS)
    done = attempt(
        db, lambda: catalog.create_model(db, st.box, me.who, build(s.ModelCreate, _model_in(form)))
    )
    return _catalog_answer(request, db, me, "models", done, "model-registered")


# --- orders and licenses --------------------------------------------------------------------


@router.get("/orders")
def order_form(request: Request, db: DB, me: Me) -> Response:
    return _order_page(request, db, me)


def _order_page(request: Request, db: Session, me: Viewer, **extra: Any) -> Response:
    return page(
        request,
        "order.html",
        me,
        customers=catalog.list_customers(db, me.who),
        plans=catalog.list_plans(db, me.who),
        models=catalog.list_models(db, me.who),
        # one per rendered form: the same form sent twice (a double click, a
        # resubmission) is one order, as an API client's Idempotency-Key makes it
        order_token=secrets.token_urlsafe(18),
        **extra,
    )


_ORDER_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


def _order_key(form: Any) -> str | None:
    token = text(form, "order_token")
    if not token:
        return None  # an older page, or a script: no deduplication, as before
    if not _ORDER_TOKEN.fullmatch(token):
        raise FormProblem("the form is damaged (order_token); reload the page and try again")
    return f"console:{token}"


@router.post("/orders")
def order(request: Request, st: State, db: DB, me: Me, form: Form) -> Response:
    allow(me, *ISSUERS)
    body = {
        "customer": text(form, "customer"),
        "plan": text(form, "plan"),
        "models": listed(form, "models"),
    }
    done = attempt(
        db,
        lambda: licensing.create_order(
            db, st.box, me.who, build(s.OrderCreate, body), idempotency_key=_order_key(form)
        ),
    )
    if isinstance(done, str):
        return _order_page(request, db, me, error=done, status=422)
    lic, _key = done
    # Post/Redirect/Get: reloading the license page asks for nothing to be issued again
    return done_redirect(f"{PREFIX}/licenses/{lic.id}", "issued")


@router.get("/licenses")
def licenses(request: Request, db: DB, me: Me) -> Response:
    rows = licensing.list_licenses(db, me.who)
    counts = licensing.device_counts(db, me.who.vendor_id, [r.id for r in rows])
    names = {c.id: c.name for c in catalog.list_customers(db, me.who)}
    plans = {p.id: p.name for p in catalog.list_plans(db, me.who)}
    return page(request, "licenses.html", me, rows=rows, counts=counts, names=names, plans=plans)


def _license_page(
    request: Request, st: State, db: Session, me: Viewer, ref: str, **extra: Any
) -> Response:
    try:
        lic = licensing.get_license(db, st.box, me.who, ref)
    except NotFoundError as exc:
        return _not_found(request, me, exc)
    key = licensing.license_key_of(st.box, lic) if me.can(*ISSUERS) else None
    return page(
        request,
        "license.html",
        me,
        lic=lic,
        key=key,
        devices=licensing.list_devices(db, st.box, me.who, lic.id),
        **extra,
    )


@router.get("/licenses/{ref}")
def license_detail(ref: str, request: Request, st: State, db: DB, me: Me) -> Response:
    extra = notice_of(request)
    if request.query_params.get("done") == "issued":
        extra["new_key"] = True
    return _license_page(request, st, db, me, ref, **extra)


STATUS_ACTIONS = {"suspend": "suspended", "revoke": "revoked", "reinstate": "active"}


@router.post("/licenses/{ref}/{action}")
def license_action(
    ref: str, action: str, request: Request, st: State, db: DB, me: Me, form: Form
) -> Response:
    allow(me, *ISSUERS)
    if action == "renew":

        def run() -> object:
            days = optional_int(form, "days", "Days")
            return licensing.renew(db, st.box, me.who, ref, build(s.RenewIn, {"days": days}).days)
    elif action in STATUS_ACTIONS:

        def run() -> object:
            return licensing.set_status(db, st.box, me.who, ref, STATUS_ACTIONS[action])
    else:
        return problem(
            request, me, f"no license action {action[:40]!r}", status=404, title="Not found"
        )
    done = attempt(db, run)
    if isinstance(done, str):
        return _license_page(request, st, db, me, ref, **outcome(done, ""))
    # redirected: a reload must not renew the license a second time
    return done_redirect(f"{PREFIX}/licenses/{quote(ref, safe='')}", action)


# --- devices ------------------------------------------------------------------------------


@router.get("/devices")
def devices(request: Request, st: State, db: DB, me: Me) -> Response:
    return page(request, "devices.html", me, rows=licensing.list_devices(db, st.box, me.who))


DEVICE_ACTIONS: dict[str, Callable[[Session, Any, str], object]] = {
    "suspend": lambda db, who, ref: licensing.set_device_status(db, who, ref, "suspended"),
    "reinstate": lambda db, who, ref: licensing.set_device_status(db, who, ref, "active"),
    "deactivate": lambda db, who, ref: licensing.deactivate_device(db, who, ref),
    "clear-flag": lambda db, who, ref: licensing.clear_device_flag(db, who, ref),
}


@router.post("/devices/{ref}/unlock")
def device_unlock(ref: str, request: Request, st: State, db: DB, me: Me, form: Form) -> Response:
    """An emergency unlock code: a reason and a fresh TOTP code, both audited."""
    allow(me, *ISSUERS)
    try:
        body = build(
            s.UnlockIn,
            {
                "reason": text(form, "reason"),
                "totp": text(form, "totp"),
                "license": text(form, "license") or None,
            },
        )
    except FormProblem as exc:
        return _device_page(request, st, db, me, ref, error=str(exc), status=422)
    try:
        result = unlock.issue(
            db,
            st.box,
            me.who,
            device_ref=ref,
            license_ref=body.license,
            reason=body.reason,
            totp=body.totp,
            address=client_address(request),
        )
    except ControlPlaneError as exc:
        result = exc
    if isinstance(result, ControlPlaneError):
        # returned (not raised) by the service so its audit record and failure count commit
        return _device_page(request, st, db, me, ref, error=str(result), status=result.status_code)
    return _device_page(request, st, db, me, ref, notice="Unlock code issued.", unlock=result)


@router.post("/devices/{ref}/{action}")
def device_action(ref: str, action: str, request: Request, st: State, db: DB, me: Me) -> Response:
    allow(me, *ISSUERS)
    run = DEVICE_ACTIONS.get(action)
    if run is None:
        return problem(
            request, me, f"no device action {action[:40]!r}", status=404, title="Not found"
        )
    done = attempt(db, lambda: run(db, me.who, ref))
    return _device_page(request, st, db, me, ref, **outcome(done, f"Done: {action}."))


def _device_page(
    request: Request, st: State, db: Session, me: Viewer, ref: str, **extra: Any
) -> Response:
    try:
        device = licensing.get_device(db, me.who, ref)
    except NotFoundError as exc:
        return _not_found(request, me, exc)
    return page(request, "device.html", me, d=device, **extra)


@router.get("/devices/{ref}")
def device_detail(ref: str, request: Request, st: State, db: DB, me: Me) -> Response:
    return _device_page(request, st, db, me, ref)


@router.get("/devices/{ref}/license.jwt")
def device_license(ref: str, request: Request, db: DB, me: Me) -> Response:
    """The device's current license file (it opens only on that device)."""
    allow(me, *ISSUERS)
    try:
        device = licensing.get_device(db, me.who, ref)
    except NotFoundError as exc:
        return _not_found(request, me, exc)
    return download(device.token.strip() + "\n", "license.jwt", "application/jwt")


@router.get("/devices/{ref}/secret.yaml")
def device_secret(ref: str, request: Request, st: State, db: DB, me: Me) -> Response:
    """The license as a Kubernetes Secret (the same manifest ``admin licenses download
    --format k8s-secret`` writes)."""
    from modelseal.license.k8s_secret import secret_manifest

    allow(me, *ISSUERS)
    namespace = request.query_params.get("namespace", "default")[:63]
    try:
        device = licensing.get_device(db, me.who, ref)
        name = request.query_params.get("name") or f"modelseal-license-{device.id}"[:63]
        manifest = secret_manifest(
            device.token,
            name=name[:253].lower().replace("_", "-"),
            namespace=namespace,
            labels={"modelseal.dev/license": device.license_id},
        )
    except (ControlPlaneError, Exception) as exc:
        return _device_page(request, st, db, me, ref, error=str(exc), status=422)
    return download(manifest, f"{name}.yaml", "application/yaml")


# --- offline activation -------------------------------------------------------------------


@router.get("/activate")
def activate_form(request: Request, db: DB, me: Me) -> Response:
    return page(request, "activate.html", me, licenses=licensing.list_licenses(db, me.who))


@router.post("/activate")
def activate(request: Request, st: State, db: DB, me: Me, form: Form) -> Response:
    allow(me, *ISSUERS)

    def run() -> Any:
        raw = upload_text(form, "request", "the request file", limit=256 * 1024)
        if not text(form, "license"):
            raise FormProblem("choose the license the device activates")
        if not raw:
            raise FormProblem("choose the device's activation request file")
        try:
            request_json = json.loads(raw)
        except ValueError:
            raise FormProblem("the request file is not JSON") from None
        body = build(s.OfflineActivationIn, {"request": request_json})
        return licensing.activate(
            db,
            st.box,
            request_json=body.request,
            heartbeat_base_url=st.settings.heartbeat_base_url,
            caller=me.who,
            license_ref=text(form, "license") or None,
        )

    done = attempt(db, run)
    rows = licensing.list_licenses(db, me.who)
    if isinstance(done, str):
        return page(request, "activate.html", me, licenses=rows, error=done, status=422)
    _lic, device, _token, again, warnings = done
    return page(
        request,
        "activate.html",
        me,
        licenses=rows,
        device=device,
        reactivated=again,
        warnings=warnings,
        notice="Device activated.",
    )


# --- audit log ------------------------------------------------------------------------------


@router.get("/audit")
def audit_log(request: Request, db: DB, me: Me) -> Response:
    event = request.query_params.get("event", "")[:64]
    try:
        after = int(request.query_params.get("after") or -1)
    except ValueError:
        after = -1
    rows = audit.query(
        db, me.who.vendor_id, after_seq=max(after, -1), event_prefix=event or None, limit=100
    )
    return page(
        request, "audit.html", me, rows=[audit.record_of(r) for r in rows], event=event, after=after
    )


@router.get("/audit/verify")
def audit_verify(request: Request, st: State, db: DB, me: Me) -> Response:
    verdict = audit.verify_released(db, st.sessions, audit.AuditKeys(st.box), me.who.vendor_id)
    fragment = request.headers.get("hx-request") == "true"
    return page(
        request,
        "audit_verify.html" if fragment else "audit.html",
        me,
        verdict=verdict.to_json(),
        rows=[],
        event="",
        after=-1,
    )


# --- webhooks -------------------------------------------------------------------------------


@router.get("/webhooks")
def hooks(request: Request, db: DB, me: Me) -> Response:
    allow(me, *OWNERS)
    return page(request, "webhooks.html", me, rows=webhooks.list_endpoints(db, me.who))


@router.post("/webhooks")
def hooks_add(request: Request, st: State, db: DB, me: Me, form: Form) -> Response:
    allow(me, *OWNERS)
    done = attempt(
        db,
        lambda: webhooks.create_endpoint(
            db,
            st.box,
            me.who,
            **build(
                s.WebhookCreate, {"url": text(form, "url"), "events": listed(form, "events")}
            ).model_dump(),
            allow_private=st.settings.webhook_allow_private,
        ),
    )
    secret = None if isinstance(done, str) else done[1]
    return page(
        request,
        "webhooks.html",
        me,
        rows=webhooks.list_endpoints(db, me.who),
        secret=secret,
        **outcome(done, "Webhook added."),
    )


def _hook_page(request: Request, db: Session, me: Viewer, ref: str, **extra: Any) -> Response:
    try:
        endpoint = webhooks.get_endpoint(db, me.who, ref)
    except NotFoundError as exc:
        return _not_found(request, me, exc)
    msgs = webhooks.messages(db, me.who, ref, limit=100)
    tries = {m.msg_id: webhooks.attempts(db, me.who, ref, m.msg_id) for m in msgs[:20]}
    return page(request, "webhook.html", me, hook=endpoint, messages=msgs, tries=tries, **extra)


@router.get("/webhooks/{ref}")
def hook(ref: str, request: Request, db: DB, me: Me) -> Response:
    allow(me, *OWNERS)
    return _hook_page(request, db, me, ref)


@router.post("/webhooks/{ref}/disable")
def hook_disable(ref: str, request: Request, db: DB, me: Me) -> Response:
    allow(me, *OWNERS)
    done = attempt(db, lambda: webhooks.disable_endpoint(db, me.who, ref))
    return _hook_page(request, db, me, ref, **outcome(done, "Webhook disabled."))


@router.post("/webhooks/{ref}/messages/{msg_id}/redeliver")
def hook_redeliver(ref: str, msg_id: str, request: Request, db: DB, me: Me) -> Response:
    allow(me, *OWNERS)
    done = attempt(db, lambda: webhooks.redeliver(db, me.who, ref, msg_id))
    return _hook_page(request, db, me, ref, **outcome(done, "Queued for redelivery."))


# --- reports --------------------------------------------------------------------------------


@router.get("/reports")
def report_list(request: Request, me: Me) -> Response:
    return page(request, "reports.html", me, kinds=reports.KINDS)


@router.get("/reports/{kind}.{fmt}")
def report(kind: str, fmt: str, request: Request, db: DB, me: Me) -> Response:
    if kind not in reports.KINDS or fmt not in ("csv", "json"):
        return problem(request, me, "no such report", status=404, title="Not found")
    try:
        days = min(max(int(request.query_params.get("days") or 30), 1), 3650)
    except ValueError:
        days = 30
    rows = list(reports.rows(db, me.who.vendor_id, kind, since=None, days=days))
    body = b"".join(reports.render(kind, iter(rows), fmt))
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return download(body, f"{kind}.{fmt}", media)
