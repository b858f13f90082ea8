"""The Platform pages: model vendors, models and versions, documents, deployment configs,
images, the deploy wizard (with the recommended NodePorts), deployments with status and
logs, gateway routes, API keys (shown once) and the gateway's envelope key.

As in ``console/licensing.py``: the API's services, schemas and role rules, with pages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from modelseal.controlplane.console.licensing import outcome
from modelseal.controlplane.console.web import (
    ISSUERS,
    PREFIX,
    Form,
    FormProblem,
    Me,
    Viewer,
    allow,
    attempt,
    build,
    download,
    listed,
    page,
    problem,
    text,
    upload_text,
)
from modelseal.controlplane.deps import DB, State
from modelseal.controlplane.errors import ControlPlaneError
from modelseal.controlplane.platform import schemas as ps
from modelseal.controlplane.platform import services as svc
from modelseal.controlplane.platform.routes import Runtime
from modelseal.controlplane.platform.runtime import PlatformRuntime
from modelseal.errors import ModelsealError

router = APIRouter(prefix=PREFIX + "/platform", include_in_schema=False)
P = PREFIX + "/platform"

#: what each registry page lists; its template is ``platform_<name>.html``
LISTS: dict[str, Callable[[Session, Viewer], Any]] = {
    "vendors": lambda db, me: svc.list_model_vendors(db, me.who),
    "models": lambda db, me: [
        (m, svc.vendor_name(db, m), svc.versions_of(db, m)) for m in svc.list_models(db, me.who)
    ],
    "documents": lambda db, me: svc.list_documents(db, me.who),
    "configs": lambda db, me: svc.list_configs(db, me.who),
    "images": lambda db, me: svc.list_images(db, me.who),
    "routes": lambda db, me: svc.list_routes(db, me.who),
    "api-keys": lambda db, me: svc.list_api_keys(db, me.who),
}


def _gateway_key(db: Session, me: Viewer) -> Any:
    try:
        return svc.gateway_key(db, me.who)
    except ControlPlaneError:
        return None


def _listing(
    request: Request,
    db: Session,
    me: Viewer,
    name: str,
    done: object = None,
    ok: str = "",
    **extra: Any,
) -> Response:
    if done is not None:
        extra |= outcome(done, ok)
    if name == "documents":
        extra["models"] = svc.list_models(db, me.who)
    if name in ("models", "configs"):
        extra["vendors"] = svc.list_model_vendors(db, me.who)
        extra["model_rows"] = svc.list_models(db, me.who)
    if name in ("routes", "api-keys"):
        extra["gateway_key"] = _gateway_key(db, me)
        extra["route_rows"] = svc.list_routes(db, me.who)
    template = "platform_" + name.replace("-", "_") + ".html"
    return page(request, template, me, rows=LISTS[name](db, me), **extra)


def listing(name: str, request: Request, db: DB, me: Me) -> Response:
    if name not in LISTS:
        return problem(request, me, "no such page", status=404, title="Not found")
    return _listing(request, db, me, name)


# --- creating -------------------------------------------------------------------------------


def _version(form: Any) -> dict[str, str] | None:
    version = text(form, "version")
    return {"version": version} if version else None


CREATE: dict[str, tuple[str, Callable[[Session, Viewer, Any], Any]]] = {
    "vendors": (
        "Vendor added.",
        lambda db, me, form: svc.create_model_vendor(
            db,
            me.who,
            build(
                ps.ModelVendorCreate,
                {k: text(form, k) for k in ("name", "address", "phone", "business")},
            ),
        ),
    ),
    "models": (
        "Model registered.",
        lambda db, me, form: svc.create_model(
            db,
            me.who,
            build(
                ps.ModelCreate,
                {
                    "vendor": text(form, "vendor"),
                    "name": text(form, "name"),
                    "function": text(form, "function"),
                    "language": text(form, "language"),
                    "version": _version(form),
                },
            ),
        ),
    ),
    "configs": (
        "Configuration stored.",
        lambda db, me, form: svc.create_config(
            db,
            me.who,
            build(
                ps.ConfigCreate,
                {
                    "name": text(form, "name"),
                    "model": text(form, "model") or None,
                    "spec": upload_text(form, "spec", "the spec", limit=256 * 1024),
                },
            ),
        ),
    ),
    "images": (
        "Image recorded.",
        lambda db, me, form: svc.create_image(
            db,
            me.who,
            build(
                ps.ImageCreate,
                {
                    "name": text(form, "name"),
                    "address": text(form, "address"),
                    "digest": text(form, "digest") or None,
                },
            ),
        ),
    ),
    "routes": (
        "Route added.",
        lambda db, me, form: svc.create_route(
            db,
            me.who,
            build(
                ps.RouteCreate,
                {
                    "id": text(form, "id"),
                    "prefix": text(form, "prefix"),
                    "forward_url": text(form, "forward_url"),
                    "name": text(form, "name") or None,
                },
            ),
        ),
    ),
}


def create(name: str, request: Request, db: DB, me: Me, form: Form) -> Response:
    allow(me, *ISSUERS)
    if name == "api-keys":
        return _api_key(request, db, me, form)
    if name not in CREATE:
        return problem(request, me, "no such page", status=404, title="Not found")
    ok, run = CREATE[name]
    done = attempt(db, lambda: run(db, me, form))
    return _listing(request, db, me, name, done, ok)


def _api_key(request: Request, db: Session, me: Viewer, form: Any) -> Response:
    """A model user's key: shown on this page once; only its SHA-256 is stored."""
    body = {
        "name": text(form, "name"),
        "routes": listed(form, "routes") or ["*"],
        "rate_limit": text(form, "rate_limit") or None,
    }
    done = attempt(db, lambda: svc.create_api_key(db, me.who, build(ps.ApiKeyCreate, body)))
    key = None if isinstance(done, str) else done[1]
    return _listing(request, db, me, "api-keys", done, "API key made: copy it now.", new_key=key)


@router.post("/models/{ref}/versions")
def add_version(ref: str, request: Request, db: DB, me: Me, form: Form) -> Response:
    allow(me, *ISSUERS)
    done = attempt(
        db,
        lambda: svc.add_version(
            db, me.who, ref, build(ps.VersionCreate, {"version": text(form, "version")})
        ),
    )
    return _listing(request, db, me, "models", done, "Version added.")


@router.post("/gateway-key")
def gateway_key(request: Request, st: State, db: DB, me: Me) -> Response:
    allow(me, *ISSUERS)
    done = attempt(db, lambda: svc.create_gateway_key(db, me.who, st.box))
    return _listing(request, db, me, "routes", done, "The gateway's SM2 key pair is made.")


# --- deleting -------------------------------------------------------------------------------

DELETE: dict[str, Callable[[Session, Viewer, PlatformRuntime, str], Any]] = {
    "vendors": lambda db, me, rt, ref: svc.delete_model_vendor(db, me.who, ref),
    "models": lambda db, me, rt, ref: svc.delete_model(db, me.who, rt, ref),
    "documents": lambda db, me, rt, ref: svc.delete_document(db, me.who, rt, ref),
    "configs": lambda db, me, rt, ref: svc.delete_config(db, me.who, ref),
    "images": lambda db, me, rt, ref: svc.delete_image(db, me.who, ref),
    "routes": lambda db, me, rt, ref: svc.delete_route(db, me.who, ref),
    "api-keys": lambda db, me, rt, ref: svc.revoke_api_key(db, me.who, ref),
}


def remove(name: str, ref: str, request: Request, db: DB, me: Me, rt: Runtime) -> Response:
    allow(me, *ISSUERS)
    if name not in DELETE:
        return problem(request, me, "no such page", status=404, title="Not found")
    done = attempt(db, lambda: DELETE[name](db, me, rt, ref))
    return _listing(request, db, me, name, done, "Done.")


# --- documents ------------------------------------------------------------------------------


@router.post("/documents/upload")
def upload(request: Request, db: DB, me: Me, rt: Runtime, form: Form) -> Response:
    """Up to the document limit, as the API (app.py gives this path the larger body limit)."""
    allow(me, *ISSUERS)
    file = form.get("file")

    def run() -> Any:
        if not isinstance(file, UploadFile) or not file.filename:
            raise FormProblem("choose a file to upload")
        data = file.file.read(rt.max_document_bytes + 1)
        kind = text(form, "kind")
        if kind not in ("design", "usage", "test"):
            raise FormProblem("kind must be design, usage or test")
        return svc.upload_document(
            db, me.who, rt, text(form, "model"), kind=kind, filename=file.filename[:255], data=data
        )

    done = attempt(db, run)
    return _listing(request, db, me, "documents", done, "Document stored.")


@router.get("/documents/{ref}/content")
def document_content(ref: str, request: Request, db: DB, me: Me, rt: Runtime) -> Response:
    try:
        doc = svc.get_document(db, me.who, ref)
        data = svc.document_bytes(rt, doc)
    except ControlPlaneError as exc:
        return problem(request, me, str(exc), status=exc.status_code, title="Not found")
    response = download(data, doc.filename, doc.content_type)
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


# --- the deploy wizard and deployments ----------------------------------------------------


def _port_count(db: Session, me: Viewer, config: str) -> tuple[int, str | None]:
    """How many NodePorts the chosen config's spec exposes (1 when none is chosen yet)."""
    from modelseal.deploy.spec import parse_spec

    if not config:
        return 1, None
    try:
        return parse_spec(svc.get_config(db, me.who, config).spec_yaml).spec.node_port_count, None
    except (ControlPlaneError, ModelsealError) as exc:
        return 1, str(exc)


def _wizard(
    request: Request,
    db: Session,
    me: Viewer,
    rt: PlatformRuntime,
    config: str = "",
    *,
    fragment: bool = False,
    **extra: Any,
) -> Response:
    count, problem = _port_count(db, me, config)
    used, recommended = svc.node_ports(db, me.who, rt, count)
    ports = {
        "range": str(rt.port_range),
        "count": count,
        "used": used,
        "recommended": list(recommended),
        "problem": problem,
    }
    if fragment:
        return page(request, "deploy_ports.html", me, ports=ports)
    return page(
        request,
        "deploy.html",
        me,
        configs=svc.list_configs(db, me.who),
        config=config,
        ports=ports,
        gateway_key=_gateway_key(db, me),
        **extra,
    )


@router.get("/deploy")
def wizard(request: Request, db: DB, me: Me, rt: Runtime) -> Response:
    config = request.query_params.get("config", "")[:200]
    return _wizard(
        request, db, me, rt, config, fragment=request.headers.get("hx-request") == "true"
    )


@router.post("/deploy")
def deploy(request: Request, st: State, db: DB, me: Me, rt: Runtime, form: Form) -> Response:
    allow(me, *ISSUERS)
    config = text(form, "config")

    def run() -> Any:
        spec = upload_text(form, "spec", "the spec", limit=256 * 1024)
        ports_text = listed(form, "node_ports")
        try:
            ports = [int(p) for p in ports_text] or None
        except ValueError:
            raise FormProblem("NodePorts are numbers, e.g. 30080, 30081") from None
        body = build(
            ps.DeploymentCreate,
            {
                "config": config or None,
                "spec": None if config else (spec or None),
                "license": upload_text(form, "license", "the license file", limit=256 * 1024),
                "trust": upload_text(form, "trust", "the trust file", limit=256 * 1024) or None,
                "node_ports": ports,
                "decrypt": text(form, "decrypt") != "no",
            },
        )
        return svc.create_deployment(db, me.who, st.box, rt, body)

    done = attempt(db, run)
    if isinstance(done, str):
        return _wizard(request, db, me, rt, config, error=done, status=422)
    row, _route = done
    return _deployment_page(request, db, me, rt, row.id, notice="Deployed.")


def _deployment_page(
    request: Request,
    db: Session,
    me: Viewer,
    rt: PlatformRuntime,
    ref: str,
    *,
    fragment: bool = False,
    **extra: Any,
) -> Response:
    try:
        row, status = svc.deployment_status(db, me.who, rt, ref)
    except ControlPlaneError as exc:
        return problem(request, me, str(exc), status=exc.status_code, title="Not available")
    route = svc.route_of(db, row)
    logs = None
    if me.can(*ISSUERS) and not fragment:
        try:
            logs = svc.deployment_logs(db, me.who, rt, ref, 200)[1]
        except (ControlPlaneError, ModelsealError) as exc:
            logs = f"(no logs: {exc})"
    name = "deployment_status.html" if fragment else "deployment.html"
    return page(request, name, me, d=row, state=status.to_json(), route=route, logs=logs, **extra)


@router.get("/deployments")
def deployments(request: Request, db: DB, me: Me) -> Response:
    phase = request.query_params.get("phase", "")[:16] or None
    rows = svc.list_deployments(db, me.who, phase=phase)
    return page(request, "deployments.html", me, rows=[(r, svc.route_of(db, r)) for r in rows])


@router.get("/deployments/{ref}")
def deployment(ref: str, request: Request, db: DB, me: Me, rt: Runtime) -> Response:
    return _deployment_page(
        request, db, me, rt, ref, fragment=request.headers.get("hx-request") == "true"
    )


@router.get("/deployments/{ref}/logs.txt")
def deployment_logs(ref: str, request: Request, db: DB, me: Me, rt: Runtime) -> Response:
    allow(me, *ISSUERS)
    tail = optional_int_query(request, "tail", 1000)
    try:
        _row, logs = svc.deployment_logs(db, me.who, rt, ref, tail)
    except (ControlPlaneError, ModelsealError) as exc:
        return problem(request, me, str(exc), status=404, title="No logs")
    return download(logs, f"{ref}.log", "text/plain; charset=utf-8")


@router.post("/deployments/{ref}/delete")
def deployment_delete(ref: str, request: Request, db: DB, me: Me, rt: Runtime) -> Response:
    allow(me, *ISSUERS)
    done = attempt(db, lambda: svc.delete_deployment(db, me.who, rt, ref))
    rows = svc.list_deployments(db, me.who)
    return page(
        request,
        "deployments.html",
        me,
        rows=[(r, svc.route_of(db, r)) for r in rows],
        **outcome(done, "Deployment deleted; its NodePorts and route are free."),
    )


def optional_int_query(request: Request, name: str, default: int) -> int:
    try:
        return min(max(int(request.query_params.get(name) or default), 1), 10000)
    except ValueError:
        return default


# the generic registry routes last: "/deploy" and "/deployments" above match first
router.add_api_route("/{name}", listing, methods=["GET"])
router.add_api_route("/{name}", create, methods=["POST"])
router.add_api_route("/{name}/{ref}/delete", remove, methods=["POST"])
