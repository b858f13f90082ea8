"""The Platform API under ``/v1/platform``: thin, one service call per operation.

Roles as in the Licensing area: ``auditor`` reads, ``issuer`` and ``owner``
change things; the gateway's private envelope key is for ``owner`` and
``issuer`` tokens only (give the gateway an issuer token of its own).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from modelseal.controlplane.deps import DB, Issuer, Reader, State
from modelseal.controlplane.platform import schemas as s
from modelseal.controlplane.platform import services as svc
from modelseal.controlplane.platform.errors import DocumentTooLargeError
from modelseal.controlplane.platform.models import (
    DeploymentRecord,
    GatewayApiKey,
    GatewayRoute,
    RegisteredModel,
)
from modelseal.controlplane.platform.runtime import PlatformRuntime
from modelseal.controlplane.routes import AUTH, errors
from modelseal.controlplane.services.vendors import Caller

router = APIRouter(prefix="/v1/platform", tags=["platform"], responses=errors(*AUTH))

Search = Annotated[str | None, Query(max_length=200, description="substring, case-insensitive")]


def runtime(request: Request) -> PlatformRuntime:
    rt: PlatformRuntime = request.app.state.platform
    return rt


Runtime = Annotated[PlatformRuntime, Depends(runtime)]


def _model(db: Any, row: RegisteredModel) -> s.ModelOut:
    return s.ModelOut(
        id=row.id,
        vendor_id=row.model_vendor_id,
        vendor=svc.vendor_name(db, row),
        name=row.name,
        function=row.function,
        language=row.language,
        created_at=row.created_at,
        versions=[s.VersionOut.model_validate(v) for v in svc.versions_of(db, row)],
    )


def _config(row: Any) -> s.ConfigOut:
    return s.ConfigOut(
        id=row.id,
        name=row.name,
        model_id=row.model_id,
        deployment_name=row.deployment_name,
        namespace=row.namespace,
        image=row.image,
        created_at=row.created_at,
        spec=row.spec_yaml,
    )


def _route(row: GatewayRoute) -> s.RouteOut:
    return s.RouteOut(
        id=row.route_id,
        name=row.name,
        prefix=row.prefix,
        forward_url=row.forward_url,
        strip_prefix=row.strip_prefix,
        decrypt=row.decrypt,
        timeout_s=row.timeout_s,
        deployment_id=row.deployment_id,
    )


def _key(row: GatewayApiKey) -> s.ApiKeyOut:
    return s.ApiKeyOut.model_validate(row)


def _deployment(row: DeploymentRecord, route: GatewayRoute | None) -> s.DeploymentOut:
    return s.DeploymentOut(
        id=row.id,
        namespace=row.namespace,
        name=row.name,
        backend=row.backend,
        config_id=row.config_id,
        model_name=row.model_name,
        model_version=row.model_version,
        node_ports=list(row.node_ports),
        phase=row.phase,
        forward_url=row.forward_url,
        route=route.route_id if route is not None else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# --- model vendors ------------------------------------------------------------------------------


@router.post("/vendors", response_model=s.ModelVendorOut, status_code=201, responses=errors(409))
def create_vendor(body: s.ModelVendorCreate, db: DB, who: Issuer) -> s.ModelVendorOut:
    return s.ModelVendorOut.model_validate(svc.create_model_vendor(db, who, body))


@router.get("/vendors", response_model=list[s.ModelVendorOut])
def list_vendors(
    db: DB, who: Reader, q: Search = None, business: Search = None
) -> list[s.ModelVendorOut]:
    rows = svc.list_model_vendors(db, who, q=q, business=business)
    return [s.ModelVendorOut.model_validate(r) for r in rows]


@router.get("/vendors/{ref}", response_model=s.ModelVendorOut, responses=errors(404))
def show_vendor(ref: str, db: DB, who: Reader) -> s.ModelVendorOut:
    return s.ModelVendorOut.model_validate(svc.get_model_vendor(db, who, ref))


@router.delete("/vendors/{ref}", response_model=s.ModelVendorOut, responses=errors(404, 409))
def delete_vendor(ref: str, db: DB, who: Issuer) -> s.ModelVendorOut:
    return s.ModelVendorOut.model_validate(svc.delete_model_vendor(db, who, ref))


# --- models and versions ---------------------------------------------------------------------


@router.post("/models", response_model=s.ModelOut, status_code=201, responses=errors(404, 409))
def create_model(body: s.ModelCreate, db: DB, who: Issuer) -> s.ModelOut:
    return _model(db, svc.create_model(db, who, body))


@router.get("/models", response_model=list[s.ModelOut], responses=errors(404))
def list_models(
    db: DB,
    who: Reader,
    q: Search = None,
    vendor: Search = None,
    language: Search = None,
) -> list[s.ModelOut]:
    return [_model(db, m) for m in svc.list_models(db, who, q=q, vendor=vendor, language=language)]


@router.get("/models/{ref}", response_model=s.ModelOut, responses=errors(404))
def show_model(ref: str, db: DB, who: Reader) -> s.ModelOut:
    return _model(db, svc.get_model(db, who, ref))


@router.post(
    "/models/{ref}/versions",
    response_model=s.VersionOut,
    status_code=201,
    responses=errors(404, 409),
)
def add_version(ref: str, body: s.VersionCreate, db: DB, who: Issuer) -> s.VersionOut:
    return s.VersionOut.model_validate(svc.add_version(db, who, ref, body))


@router.delete("/models/{ref}", response_model=s.ModelOut, responses=errors(404))
def delete_model(ref: str, db: DB, who: Issuer, rt: Runtime) -> s.ModelOut:
    row = svc.get_model(db, who, ref)
    shown = _model(db, row)
    svc.delete_model(db, who, rt, ref)
    return shown


# --- documents ---------------------------------------------------------------------------------

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "the document's bytes; its type is judged from them, not from a header",
    }
}


def _bearer(request: Request) -> Any:
    """The request's bearer credentials, as FastAPI's ``HTTPBearer`` would give them."""
    from fastapi.security import HTTPAuthorizationCredentials

    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return HTTPAuthorizationCredentials(scheme="Bearer", credentials=credentials.strip())
    return None


def _document_uploader(request: Request, st: State) -> Caller:
    """Who uploads, decided before the body is read and before the query is validated.

    Its own short transaction (not the request's ``DB`` dependency): the upload
    may take a while and must not hold a database transaction open, and a
    stranger cannot make us buffer 16 MiB, nor learn the query's rules.
    """
    from modelseal.controlplane.deps import caller, require

    creds = _bearer(request)
    with st.sessions() as db, db.begin():
        return require("owner", "issuer")(caller(request, st, db, creds))


@router.post(
    "/models/{ref}/documents",
    response_model=s.DocumentOut,
    status_code=201,
    responses=errors(404, 413, 415),
    openapi_extra=_UPLOAD_BODY,
)
async def upload_document(
    ref: str,
    request: Request,
    st: State,
    rt: Runtime,
    uploader: Annotated[Caller, Depends(_document_uploader)],
    kind: Annotated[s.DocumentKind, Query(description="design, usage or test")],
    filename: Annotated[str, Query(min_length=1, max_length=255)] = "document",
) -> s.DocumentOut:
    """Upload raw bytes (``Content-Type: application/octet-stream``), at most the server's
    document limit. Read with a bound here: a chunked body has no Content-Length to refuse."""
    from starlette.concurrency import run_in_threadpool

    from modelseal.controlplane.deps import caller, require

    creds = _bearer(request)
    del uploader  # authorized; the store below authenticates again in its own transaction
    limit = rt.max_document_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise DocumentTooLargeError(f"documents are limited to {limit} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)

    def store() -> s.DocumentOut:
        with st.sessions() as db, db.begin():
            # authenticated again in this transaction: the audit log records who stored it
            again = require("owner", "issuer")(caller(request, st, db, creds))
            row = svc.upload_document(db, again, rt, ref, kind=kind, filename=filename, data=data)
            return s.DocumentOut.model_validate(row)

    return await run_in_threadpool(store)


@router.get("/documents", response_model=list[s.DocumentOut], responses=errors(404))
def list_documents(
    db: DB,
    who: Reader,
    model: Search = None,
    kind: Annotated[s.DocumentKind | None, Query()] = None,
    q: Search = None,
) -> list[s.DocumentOut]:
    rows = svc.list_documents(db, who, model=model, kind=kind, q=q)
    return [s.DocumentOut.model_validate(r) for r in rows]


@router.get("/documents/{ref}", response_model=s.DocumentOut, responses=errors(404))
def show_document(ref: str, db: DB, who: Reader) -> s.DocumentOut:
    return s.DocumentOut.model_validate(svc.get_document(db, who, ref))


@router.get(
    "/documents/{ref}/content",
    responses={
        **errors(404),
        200: {"content": {"application/octet-stream": {}}, "description": "the bytes"},
    },
)
def download_document(ref: str, db: DB, who: Reader, rt: Runtime) -> Response:
    """The stored bytes, as an attachment with the sniffed type and ``nosniff``."""
    doc = svc.get_document(db, who, ref)
    data = svc.document_bytes(rt, doc)
    return Response(
        data,
        media_type=doc.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{doc.filename}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Digest": f"sha-256={doc.sha256}",
        },
    )


@router.delete("/documents/{ref}", response_model=s.DocumentOut, responses=errors(404))
def delete_document(ref: str, db: DB, who: Issuer, rt: Runtime) -> s.DocumentOut:
    return s.DocumentOut.model_validate(svc.delete_document(db, who, rt, ref))


# --- deployment configs -----------------------------------------------------------------------


@router.post("/configs", response_model=s.ConfigOut, status_code=201, responses=errors(404, 409))
def create_config(body: s.ConfigCreate, db: DB, who: Issuer) -> s.ConfigOut:
    return _config(svc.create_config(db, who, body))


@router.get("/configs", response_model=list[s.ConfigOut], responses=errors(404))
def list_configs(db: DB, who: Reader, q: Search = None, model: Search = None) -> list[s.ConfigOut]:
    return [_config(c) for c in svc.list_configs(db, who, q=q, model=model)]


@router.get("/configs/{ref}", response_model=s.ConfigOut, responses=errors(404))
def show_config(ref: str, db: DB, who: Reader) -> s.ConfigOut:
    return _config(svc.get_config(db, who, ref))


@router.delete("/configs/{ref}", response_model=s.ConfigOut, responses=errors(404))
def delete_config(ref: str, db: DB, who: Issuer) -> s.ConfigOut:
    return _config(svc.delete_config(db, who, ref))


# --- images ----------------------------------------------------------------------


@router.post("/images", response_model=s.ImageOut, status_code=201, responses=errors(409))
def create_image(body: s.ImageCreate, db: DB, who: Issuer) -> s.ImageOut:
    return s.ImageOut.model_validate(svc.create_image(db, who, body))


@router.get("/images", response_model=list[s.ImageOut])
def list_images(db: DB, who: Reader, q: Search = None) -> list[s.ImageOut]:
    return [s.ImageOut.model_validate(r) for r in svc.list_images(db, who, q=q)]


@router.get("/images/{ref}", response_model=s.ImageOut, responses=errors(404))
def show_image(ref: str, db: DB, who: Reader) -> s.ImageOut:
    return s.ImageOut.model_validate(svc.get_image(db, who, ref))


@router.delete("/images/{ref}", response_model=s.ImageOut, responses=errors(404))
def delete_image(ref: str, db: DB, who: Issuer) -> s.ImageOut:
    return s.ImageOut.model_validate(svc.delete_image(db, who, ref))


# --- deployments ----------------------------------------------------------------------------------


@router.post(
    "/deployments",
    response_model=s.DeploymentOut,
    status_code=201,
    responses=errors(404, 409),
)
def create_deployment(
    body: s.DeploymentCreate, db: DB, who: Issuer, st: State, rt: Runtime
) -> s.DeploymentOut:
    """Deploy a stored config or an uploaded spec with its license: NodePorts reserved,
    the backend applies it, and its gateway route is created or updated. Deploying the
    same namespace/name again updates it in place and keeps its ports."""
    row, route = svc.create_deployment(db, who, st.box, rt, body)
    return _deployment(row, route)


@router.get("/deployments", response_model=list[s.DeploymentOut])
def list_deployments(
    db: DB,
    who: Reader,
    q: Search = None,
    phase: Annotated[str | None, Query(max_length=16)] = None,
) -> list[s.DeploymentOut]:
    rows = svc.list_deployments(db, who, q=q, phase=phase)
    return [_deployment(r, svc.route_of(db, r)) for r in rows]


@router.get("/deployments/{ref}", response_model=s.DeploymentOut, responses=errors(404))
def show_deployment(ref: str, db: DB, who: Reader) -> s.DeploymentOut:
    row = svc.get_deployment(db, who, ref)
    return _deployment(row, svc.route_of(db, row))


@router.get(
    "/deployments/{ref}/status", response_model=s.DeploymentStatusOut, responses=errors(404)
)
def deployment_status(ref: str, db: DB, who: Reader, rt: Runtime) -> s.DeploymentStatusOut:
    row, status = svc.deployment_status(db, who, rt, ref)
    return s.DeploymentStatusOut(id=row.id, **status.to_json())


@router.get("/deployments/{ref}/logs", response_model=s.LogsOut, responses=errors(404))
def deployment_logs(
    ref: str,
    db: DB,
    who: Issuer,
    rt: Runtime,
    tail: Annotated[int, Query(ge=1, le=10000)] = 200,
) -> s.LogsOut:
    row, logs = svc.deployment_logs(db, who, rt, ref, tail)
    return s.LogsOut(id=row.id, logs=logs)


@router.delete("/deployments/{ref}", response_model=s.DeploymentOut, responses=errors(404))
def delete_deployment(ref: str, db: DB, who: Issuer, rt: Runtime) -> s.DeploymentOut:
    row, freed = svc.delete_deployment(db, who, rt, ref)
    out = _deployment(row, None)
    out.node_ports = list(freed)
    out.phase = "Deleted"
    return out


@router.get("/nodeports", response_model=s.NodePortsOut)
def node_ports(
    db: DB, who: Reader, rt: Runtime, count: Annotated[int, Query(ge=1, le=16)] = 1
) -> s.NodePortsOut:
    """The used NodePort records and what a deployment needing ``count`` ports would get."""
    rows, recommended = svc.node_ports(db, who, rt, count)
    return s.NodePortsOut(
        range=str(rt.port_range),
        used=[s.NodePortOut(port=r.port, owner=r.owner) for r in rows],
        recommended=list(recommended),
    )


# --- gateway routes, API keys, the gateway's config and key --------------------


@router.post("/routes", response_model=s.RouteOut, status_code=201, responses=errors(409))
def create_route(body: s.RouteCreate, db: DB, who: Issuer) -> s.RouteOut:
    return _route(svc.create_route(db, who, body))


@router.get("/routes", response_model=list[s.RouteOut])
def list_routes(db: DB, who: Reader, q: Search = None) -> list[s.RouteOut]:
    return [_route(r) for r in svc.list_routes(db, who, q=q)]


@router.get("/routes/{ref}", response_model=s.RouteOut, responses=errors(404))
def show_route(ref: str, db: DB, who: Reader) -> s.RouteOut:
    return _route(svc.get_route(db, who, ref))


@router.delete("/routes/{ref}", response_model=s.RouteOut, responses=errors(404, 409))
def delete_route(ref: str, db: DB, who: Issuer) -> s.RouteOut:
    return _route(svc.delete_route(db, who, ref))


@router.post(
    "/api-keys", response_model=s.ApiKeyCreated, status_code=201, responses=errors(404, 409)
)
def create_api_key(body: s.ApiKeyCreate, db: DB, who: Issuer) -> s.ApiKeyCreated:
    """A model user's key: returned once; only its SHA-256 is stored and sent to gateways."""
    row, key = svc.create_api_key(db, who, body)
    return s.ApiKeyCreated(**_key(row).model_dump(), key=key)


@router.get("/api-keys", response_model=list[s.ApiKeyOut])
def list_api_keys(db: DB, who: Reader) -> list[s.ApiKeyOut]:
    return [_key(k) for k in svc.list_api_keys(db, who)]


@router.post("/api-keys/{ref}/revoke", response_model=s.ApiKeyOut, responses=errors(404))
def revoke_api_key(ref: str, db: DB, who: Issuer) -> s.ApiKeyOut:
    return _key(svc.revoke_api_key(db, who, ref))


@router.get(
    "/gateway/config",
    responses={
        200: {"description": "the routes file (version 1) as JSON, with an ETag"},
        304: {"description": "unchanged since If-None-Match"},
    },
)
def gateway_config(request: Request, db: DB, who: Reader) -> Response:
    """What ``modelseal gateway --controlplane`` follows: the same document a routes file
    holds. Send ``If-None-Match`` with the last ETag to get a 304 while nothing changed."""
    import json

    doc, etag = svc.gateway_config(db, who)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(json.dumps(doc), media_type="application/json", headers=headers)


@router.post("/gateway/key", response_model=s.GatewayKeyOut, status_code=201, responses=errors(409))
def create_gateway_key(db: DB, who: Issuer, st: State) -> s.GatewayKeyOut:
    """Generate the gateway's SM2 envelope key pair here (the patent keeps it on the platform)."""
    row = svc.create_gateway_key(db, who, st.box)
    return s.GatewayKeyOut(kid=row.kid, public_pem=row.public_pem, created_at=row.created_at)


@router.get("/gateway/key", response_model=s.GatewayKeyOut, responses=errors(404))
def show_gateway_key(db: DB, who: Reader) -> s.GatewayKeyOut:
    row = svc.gateway_key(db, who)
    return s.GatewayKeyOut(kid=row.kid, public_pem=row.public_pem, created_at=row.created_at)


@router.get("/gateway/key/private", response_model=s.GatewayPrivateKeyOut, responses=errors(404))
def gateway_private_key(db: DB, who: Issuer, st: State) -> s.GatewayPrivateKeyOut:
    """The private half, for a gateway started with ``--controlplane`` (issuer or owner)."""
    row = svc.gateway_key(db, who)
    return s.GatewayPrivateKeyOut(
        kid=row.kid,
        public_pem=row.public_pem,
        created_at=row.created_at,
        private_pem=svc.gateway_private_pem(st.box, row),
    )
