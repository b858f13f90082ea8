"""The Platform area's logic: registry, documents, configs, images, deployments, gateway.

Every function takes the request's session and the :class:`Caller`; every
query filters on ``caller.vendor_id``, so another tenant's object looks
exactly like one that does not exist (404). Routes call one function each.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelseal._fs import write_file
from modelseal.controlplane.errors import ConflictError, InvalidRequestError, NotFoundError
from modelseal.controlplane.models import Base, new_id, now_s
from modelseal.controlplane.platform.errors import (
    BackendFailedError,
    BackendUnavailableError,
    DocumentTooLargeError,
    UnsupportedMediaError,
)
from modelseal.controlplane.platform.models import (
    DeploymentConfig,
    DeploymentRecord,
    Document,
    GatewayApiKey,
    GatewayKey,
    GatewayRoute,
    Image,
    ModelVendor,
    ModelVersion,
    NodePortRecord,
    RegisteredModel,
)
from modelseal.controlplane.platform.nodeports import DatabaseNodePortStore
from modelseal.controlplane.platform.runtime import PlatformRuntime
from modelseal.controlplane.platform.sniff import ACCEPTED, UnsupportedDocumentError, sniff
from modelseal.controlplane.secretbox import SecretBox
from modelseal.controlplane.services.vendors import Caller
from modelseal.errors import ModelsealError

T = TypeVar("T", bound=Base)

#: Route ids and key names the gateway accepts (gateway/routes.py).
LIST_LIMIT = 500


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _contains(column: Any, text: str) -> Any:
    return func.lower(column).like(f"%{_escape_like(text.lower())}%", escape="\\")


def _find(
    session: Session, cls: type[T], caller: Caller, ref: str, what: str, *, by_name: bool = True
) -> T:
    """One of the caller's objects by id, or by name where names are unique per tenant."""
    cond = cls.id == ref  # type: ignore[attr-defined]
    if by_name:
        cond = or_(cond, cls.name == ref)  # type: ignore[attr-defined]
    row = session.execute(
        select(cls).where(cls.vendor_id == caller.vendor_id, cond)  # type: ignore[attr-defined]
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no {what} {ref!r}")
    return row


def _flush(session: Session, conflict: str) -> None:
    """Flush, turning a unique-constraint violation into a 409 that names the object.

    A savepoint, so the request's transaction stays usable for the error reply.
    """
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise ConflictError(conflict) from None


# --- model vendors ---------------------------------------------------------------------------


def create_model_vendor(session: Session, caller: Caller, body: Any) -> ModelVendor:
    row = ModelVendor(
        id=new_id("mvn"),
        vendor_id=caller.vendor_id,
        name=body.name,
        address=body.address,
        phone=body.phone,
        business=body.business,
        created_at=now_s(),
    )
    session.add(row)
    _flush(session, f"a model vendor named {body.name!r} exists already")
    return row


def list_model_vendors(
    session: Session, caller: Caller, *, q: str | None = None, business: str | None = None
) -> list[ModelVendor]:
    query = select(ModelVendor).where(ModelVendor.vendor_id == caller.vendor_id)
    if q:
        query = query.where(
            or_(
                _contains(ModelVendor.name, q),
                _contains(ModelVendor.business, q),
                _contains(ModelVendor.address, q),
            )
        )
    if business:
        query = query.where(_contains(ModelVendor.business, business))
    return list(session.execute(query.order_by(ModelVendor.name).limit(LIST_LIMIT)).scalars())


def get_model_vendor(session: Session, caller: Caller, ref: str) -> ModelVendor:
    return _find(session, ModelVendor, caller, ref, "model vendor")


def delete_model_vendor(session: Session, caller: Caller, ref: str) -> ModelVendor:
    row = get_model_vendor(session, caller, ref)
    models = session.execute(
        select(func.count())
        .select_from(RegisteredModel)
        .where(RegisteredModel.model_vendor_id == row.id)
    ).scalar_one()
    if models:
        raise ConflictError(f"model vendor {row.name!r} still has {models} model(s); delete them")
    session.delete(row)
    return row


# --- models and versions ------------------------------------------------------------------------


def create_model(session: Session, caller: Caller, body: Any) -> RegisteredModel:
    vendor = get_model_vendor(session, caller, body.vendor)
    row = RegisteredModel(
        id=new_id("pmd"),
        vendor_id=caller.vendor_id,
        model_vendor_id=vendor.id,
        name=body.name,
        function=body.function,
        language=body.language,
        created_at=now_s(),
    )
    session.add(row)
    _flush(session, f"a model named {body.name!r} exists already")
    if body.version is not None:
        add_version(session, caller, row.id, body.version)
    return row


def add_version(session: Session, caller: Caller, model_ref: str, body: Any) -> ModelVersion:
    model = get_model(session, caller, model_ref)
    row = ModelVersion(
        id=new_id("pmv"),
        vendor_id=caller.vendor_id,
        model_id=model.id,
        version=body.version,
        config_url=body.config_url,
        image_name=body.image_name,
        image_url=body.image_url,
        created_at=now_s(),
    )
    session.add(row)
    _flush(session, f"model {model.name!r} has a version {body.version!r} already")
    return row


def list_models(
    session: Session,
    caller: Caller,
    *,
    q: str | None = None,
    vendor: str | None = None,
    language: str | None = None,
) -> list[RegisteredModel]:
    query = select(RegisteredModel).where(RegisteredModel.vendor_id == caller.vendor_id)
    if q:
        query = query.where(
            or_(_contains(RegisteredModel.name, q), _contains(RegisteredModel.function, q))
        )
    if vendor:
        mv = get_model_vendor(session, caller, vendor)
        query = query.where(RegisteredModel.model_vendor_id == mv.id)
    if language:
        query = query.where(func.lower(RegisteredModel.language) == language.lower())
    return list(session.execute(query.order_by(RegisteredModel.name).limit(LIST_LIMIT)).scalars())


def get_model(session: Session, caller: Caller, ref: str) -> RegisteredModel:
    return _find(session, RegisteredModel, caller, ref, "model")


def _natural(version: str) -> tuple[tuple[int, int | str], ...]:
    """``1.10.0`` after ``1.9.0``: digits compare as numbers, the rest as text."""
    parts = re.findall(r"\d+|[^\d]+", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def versions_of(session: Session, model: RegisteredModel) -> list[ModelVersion]:
    """Oldest first; versions registered in the same second in version order."""
    rows = session.execute(select(ModelVersion).where(ModelVersion.model_id == model.id)).scalars()
    return sorted(rows, key=lambda v: (v.created_at, _natural(v.version)))


def vendor_name(session: Session, model: RegisteredModel) -> str:
    row = session.get(ModelVendor, model.model_vendor_id)
    return row.name if row is not None else ""


def delete_model(
    session: Session, caller: Caller, runtime: PlatformRuntime, ref: str
) -> RegisteredModel:
    """The model, its versions and documents (blobs too); configs that named it keep their spec."""
    model = get_model(session, caller, ref)
    docs = list(session.execute(select(Document).where(Document.model_id == model.id)).scalars())
    session.execute(
        update(DeploymentConfig).where(DeploymentConfig.model_id == model.id).values(model_id=None)
    )
    session.execute(delete(Document).where(Document.model_id == model.id))
    session.execute(delete(ModelVersion).where(ModelVersion.model_id == model.id))
    session.delete(model)
    session.flush()
    for doc in docs:
        _remove_blob(runtime, doc.blob)
    return model


# --- documents ------------------------------------------------------------------------------------


def _blob_path(runtime: PlatformRuntime, blob: str) -> Path:
    # ``blob`` is always a name we generated (hex); checked again so a row
    # edited in the database cannot point outside the blob directory
    if not blob.isalnum():
        raise NotFoundError("the document's data is missing")
    return runtime.blobs / blob


def _remove_blob(runtime: PlatformRuntime, blob: str) -> None:
    with contextlib.suppress(OSError, NotFoundError):
        _blob_path(runtime, blob).unlink(missing_ok=True)


def _display_name(filename: str) -> str:
    """The uploader's file name, for display and Content-Disposition only: last path
    component, printable ASCII subset, bounded. It never becomes a path here."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    safe = "".join(c for c in base if c.isalnum() or c in "._- ")[:200].strip(" .")
    return safe or "document"


def upload_document(
    session: Session,
    caller: Caller,
    runtime: PlatformRuntime,
    model_ref: str,
    *,
    kind: str,
    filename: str,
    data: bytes,
) -> Document:
    model = get_model(session, caller, model_ref)
    if len(data) > runtime.max_document_bytes:
        raise DocumentTooLargeError(f"documents are limited to {runtime.max_document_bytes} bytes")
    name = _display_name(filename)
    try:
        content_type = sniff(data, name)
    except UnsupportedDocumentError as exc:
        raise UnsupportedMediaError(
            f"{exc}; accepted: PDF, PNG, JPEG, Office (docx/xlsx/pptx), ZIP, Markdown, JSON, "
            "plain UTF-8 text"
        ) from None
    assert content_type in ACCEPTED
    blob = secrets.token_hex(16)
    runtime.blobs.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file(runtime.blobs / blob, data, mode=0o600)
    row = Document(
        id=new_id("doc"),
        vendor_id=caller.vendor_id,
        model_id=model.id,
        kind=kind,
        filename=name,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        blob=blob,
        created_at=now_s(),
    )
    session.add(row)
    try:
        session.flush()
    except BaseException:
        _remove_blob(runtime, blob)
        raise
    return row


def list_documents(
    session: Session,
    caller: Caller,
    *,
    model: str | None = None,
    kind: str | None = None,
    q: str | None = None,
) -> list[Document]:
    query = select(Document).where(Document.vendor_id == caller.vendor_id)
    if model:
        query = query.where(Document.model_id == get_model(session, caller, model).id)
    if kind:
        query = query.where(Document.kind == kind)
    if q:
        query = query.where(_contains(Document.filename, q))
    return list(
        session.execute(
            query.order_by(Document.created_at, Document.id).limit(LIST_LIMIT)
        ).scalars()
    )


def get_document(session: Session, caller: Caller, ref: str) -> Document:
    return _find(session, Document, caller, ref, "document", by_name=False)


def document_bytes(runtime: PlatformRuntime, doc: Document) -> bytes:
    try:
        data = _blob_path(runtime, doc.blob).read_bytes()
    except OSError:
        raise NotFoundError(
            f"the data of document {doc.id} is missing from the blob store"
        ) from None
    if hashlib.sha256(data).hexdigest() != doc.sha256:
        # a changed blob is not served as if it were the upload
        raise NotFoundError(f"the data of document {doc.id} does not match its digest")
    return data


def delete_document(
    session: Session, caller: Caller, runtime: PlatformRuntime, ref: str
) -> Document:
    doc = get_document(session, caller, ref)
    session.delete(doc)
    session.flush()
    _remove_blob(runtime, doc.blob)
    return doc


# --- deployment configs ------------------------------------------------------------------------


def _parse_spec(text: str) -> Any:
    from modelseal.deploy.spec import parse_spec

    return parse_spec(text, source="spec")


def create_config(session: Session, caller: Caller, body: Any) -> DeploymentConfig:
    deployment = _parse_spec(body.spec)
    model_id = get_model(session, caller, body.model).id if body.model else None
    row = DeploymentConfig(
        id=new_id("cfg"),
        vendor_id=caller.vendor_id,
        name=body.name,
        model_id=model_id,
        spec_yaml=body.spec,
        deployment_name=deployment.metadata.name,
        namespace=deployment.metadata.namespace,
        image=deployment.spec.image,
        created_at=now_s(),
    )
    session.add(row)
    _flush(session, f"a deployment config named {body.name!r} exists already")
    return row


def list_configs(
    session: Session, caller: Caller, *, q: str | None = None, model: str | None = None
) -> list[DeploymentConfig]:
    query = select(DeploymentConfig).where(DeploymentConfig.vendor_id == caller.vendor_id)
    if q:
        query = query.where(
            or_(
                _contains(DeploymentConfig.name, q),
                _contains(DeploymentConfig.deployment_name, q),
                _contains(DeploymentConfig.image, q),
            )
        )
    if model:
        query = query.where(DeploymentConfig.model_id == get_model(session, caller, model).id)
    return list(session.execute(query.order_by(DeploymentConfig.name).limit(LIST_LIMIT)).scalars())


def get_config(session: Session, caller: Caller, ref: str) -> DeploymentConfig:
    return _find(session, DeploymentConfig, caller, ref, "deployment config")


def delete_config(session: Session, caller: Caller, ref: str) -> DeploymentConfig:
    row = get_config(session, caller, ref)
    session.execute(
        update(DeploymentRecord).where(DeploymentRecord.config_id == row.id).values(config_id=None)
    )
    session.delete(row)
    return row


# --- images ---------------------------------------------------------------------------------------


def create_image(session: Session, caller: Caller, body: Any) -> Image:
    from modelseal.deploy.spec import DeploymentSpec

    # the same reference grammar a spec's image must follow
    image_check = DeploymentSpec.model_fields["image"].metadata
    for check in image_check:
        func_ = getattr(check, "func", None)
        if func_ is not None:
            try:
                func_(body.address)
            except ValueError as exc:
                raise InvalidRequestError(f"address: {exc}") from None
    row = Image(
        id=new_id("img"),
        vendor_id=caller.vendor_id,
        name=body.name,
        address=body.address,
        digest=body.digest,
        created_at=now_s(),
    )
    session.add(row)
    _flush(session, f"an image at {body.address!r} is registered already")
    return row


def list_images(session: Session, caller: Caller, *, q: str | None = None) -> list[Image]:
    query = select(Image).where(Image.vendor_id == caller.vendor_id)
    if q:
        query = query.where(or_(_contains(Image.name, q), _contains(Image.address, q)))
    return list(session.execute(query.order_by(Image.name).limit(LIST_LIMIT)).scalars())


def get_image(session: Session, caller: Caller, ref: str) -> Image:
    return _find(session, Image, caller, ref, "image", by_name=False)


def delete_image(session: Session, caller: Caller, ref: str) -> Image:
    row = get_image(session, caller, ref)
    session.delete(row)
    return row


# --- the gateway's envelope key ------------------------------------------------------------------


def gateway_key(session: Session, caller: Caller) -> GatewayKey:
    row = session.get(GatewayKey, caller.vendor_id)
    if row is None:
        raise NotFoundError("no gateway envelope key yet (POST /v1/platform/gateway/key)")
    return row


def create_gateway_key(session: Session, caller: Caller, box: SecretBox) -> GatewayKey:
    """A fresh SM2 key pair for the gateway; the private half sealed at rest.

    Refused when one exists: replacing it would strand every deployment
    whose model service encrypts to the old public key.
    """
    from modelseal.crypto import generate_private_key

    if session.get(GatewayKey, caller.vendor_id) is not None:
        raise ConflictError("the gateway key exists already")
    key = generate_private_key("sm2")
    row = GatewayKey(
        vendor_id=caller.vendor_id,
        kid=key.key_id,
        private_sealed=box.seal(key.to_pem(), purpose="gateway_key", row=caller.vendor_id),
        public_pem=key.public_key().to_pem().decode(),
        created_at=now_s(),
    )
    session.add(row)
    _flush(session, "the gateway key exists already")
    return row


def gateway_private_pem(box: SecretBox, row: GatewayKey) -> str:
    return box.open(row.private_sealed, purpose="gateway_key", row=row.vendor_id).decode()


# --- gateway routes and API keys -------------------------------------------------------------


def _check_route(route_id: str, name: str, prefix: str, forward_url: str, **extra: Any) -> None:
    """The gateway's own validation (gateway/routes.py), so the control plane never hands
    a gateway a route it would refuse."""
    from modelseal.gateway.routes import parse_config

    parse_config(
        {
            "version": 1,
            "routes": [
                {
                    "id": route_id,
                    "name": name,
                    "prefix": prefix,
                    "forward_url": forward_url,
                    **extra,
                }
            ],
        }
    )


def create_route(session: Session, caller: Caller, body: Any) -> GatewayRoute:
    name = body.name or body.id
    _check_route(
        body.id,
        name,
        body.prefix,
        body.forward_url,
        strip_prefix=body.strip_prefix,
        decrypt=body.decrypt,
        timeout_s=body.timeout_s,
    )
    row = GatewayRoute(
        id=new_id("rte"),
        vendor_id=caller.vendor_id,
        route_id=body.id,
        name=name,
        prefix=body.prefix,
        forward_url=body.forward_url.rstrip("/"),
        strip_prefix=body.strip_prefix,
        decrypt=body.decrypt,
        timeout_s=body.timeout_s,
        created_at=now_s(),
    )
    session.add(row)
    _flush(session, f"a route with id {body.id!r} or prefix {body.prefix!r} exists already")
    return row


def list_routes(session: Session, caller: Caller, *, q: str | None = None) -> list[GatewayRoute]:
    query = select(GatewayRoute).where(GatewayRoute.vendor_id == caller.vendor_id)
    if q:
        query = query.where(
            or_(_contains(GatewayRoute.route_id, q), _contains(GatewayRoute.prefix, q))
        )
    return list(session.execute(query.order_by(GatewayRoute.prefix).limit(LIST_LIMIT)).scalars())


def get_route(session: Session, caller: Caller, ref: str) -> GatewayRoute:
    row = session.execute(
        select(GatewayRoute).where(
            GatewayRoute.vendor_id == caller.vendor_id,
            or_(GatewayRoute.route_id == ref, GatewayRoute.id == ref),
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no route {ref!r}")
    return row


def delete_route(session: Session, caller: Caller, ref: str) -> GatewayRoute:
    row = get_route(session, caller, ref)
    if row.deployment_id is not None:
        raise ConflictError(
            f"route {row.route_id!r} belongs to deployment {row.deployment_id}; delete that"
        )
    session.delete(row)
    return row


def create_api_key(session: Session, caller: Caller, body: Any) -> tuple[GatewayApiKey, str]:
    from modelseal.gateway.routes import Rate, new_api_key

    if body.rate_limit is not None:
        try:
            Rate.parse(body.rate_limit)
        except ValueError as exc:
            raise InvalidRequestError(f"rate_limit: {exc}") from None
    # by the gateway's route id (a record id is accepted too); unknown routes are a 404
    route_ids = [r if r == "*" else get_route(session, caller, r).route_id for r in body.routes]
    key, digest = new_api_key()
    row = GatewayApiKey(
        id=new_id("gak"),
        vendor_id=caller.vendor_id,
        name=body.name,
        sha256=digest,
        routes=list(dict.fromkeys(route_ids)),
        rate_limit=body.rate_limit,
        created_at=now_s(),
    )
    session.add(row)
    _flush(session, f"an API key named {body.name!r} exists already")
    return row, key


def list_api_keys(session: Session, caller: Caller) -> list[GatewayApiKey]:
    return list(
        session.execute(
            select(GatewayApiKey)
            .where(GatewayApiKey.vendor_id == caller.vendor_id)
            .order_by(GatewayApiKey.name)
        ).scalars()
    )


def revoke_api_key(session: Session, caller: Caller, ref: str) -> GatewayApiKey:
    row = _find(session, GatewayApiKey, caller, ref, "API key")
    if row.revoked_at is None:
        row.revoked_at = now_s()
    return row


def gateway_config(session: Session, caller: Caller) -> tuple[dict[str, Any], str]:
    """The routes file (version 1) the gateway would read, and its ETag.

    Built from the records exactly as ``gateway/routes.py: parse_config``
    reads it; keys whose routes are all gone are left out rather than
    making the whole document invalid. The ETag is the SHA-256 of the
    canonical JSON, so it changes exactly when the configuration does.
    """
    routes = list_routes(session, caller)
    ids = {r.route_id for r in routes}
    doc_routes = [
        {
            "id": r.route_id,
            "name": r.name,
            "prefix": r.prefix,
            "forward_url": r.forward_url,
            "strip_prefix": r.strip_prefix,
            "decrypt": r.decrypt,
            "timeout_s": r.timeout_s,
        }
        for r in routes
    ]
    doc_keys = []
    for k in list_api_keys(session, caller):
        if k.revoked_at is not None:
            continue
        allowed = [r for r in k.routes if r == "*" or r in ids]
        if not allowed:
            continue
        entry: dict[str, Any] = {"name": k.name, "sha256": k.sha256, "routes": allowed}
        if k.rate_limit:
            entry["rate_limit"] = k.rate_limit
        doc_keys.append(entry)
    doc = {"version": 1, "routes": doc_routes, "api_keys": doc_keys}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return doc, '"' + hashlib.sha256(canonical).hexdigest()[:32] + '"'


# --- deployments ----------------------------------------------------------------------


def _bundle(deployment: Any, license_text: str, envelope_key: str | None, trust: str | None) -> Any:
    """A :class:`DeploymentBundle` from uploaded texts, checked as ``bundle_from`` checks files.

    The spec's file names are only labels here: nothing is read from the
    server's disk on a caller's say-so.
    """
    from modelseal.crypto.keys import load_public_key
    from modelseal.deploy.bundle import DeploymentBundle
    from modelseal.deploy.errors import DeploySpecError
    from modelseal.license.jws import unverified_header

    spec = deployment.spec
    try:
        unverified_header(license_text.strip())
    except ModelsealError as exc:
        raise DeploySpecError([("license", f"not a modelseal license: {exc}")]) from None
    key_text = None
    if spec.envelope_key is not None:
        if envelope_key is None:
            raise DeploySpecError(
                [
                    (
                        "envelope_key",
                        "the spec names an envelopeKey: send it, or create the platform's "
                        "gateway key first",
                    )
                ]
            )
        try:
            key = load_public_key(envelope_key.encode("utf-8"))
        except ModelsealError as exc:
            raise DeploySpecError([("envelope_key", f"not a public key: {exc}")]) from None
        if key.kty != "sm2":
            raise DeploySpecError([("envelope_key", f"the envelope key is SM2, not {key.kty}")])
        key_text = envelope_key
    trust_pair = None
    if spec.trust is not None:
        if trust is None:
            raise DeploySpecError([("trust", "the spec names a trust file: send it")])
        if spec.trust.file.endswith(".json"):
            try:
                parsed = json.loads(trust)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise DeploySpecError([("trust", "a .json trust store must hold a JSON object")])
            trust_pair = ("trust.json", trust)
        else:
            try:
                load_public_key(trust.encode("utf-8"))
            except ModelsealError as exc:
                raise DeploySpecError([("trust", f"not a public key: {exc}")]) from None
            trust_pair = ("trust.pub", trust)
    return DeploymentBundle(deployment, license_text, key_text, trust_pair)


def _backend_call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from modelseal.deploy.backends import BackendError, DeploymentNotFoundError
    from modelseal.deploy.backends import BackendUnavailableError as Unavailable

    try:
        return fn(*args, **kwargs)
    except DeploymentNotFoundError:
        raise
    except Unavailable as exc:
        raise BackendUnavailableError(f"{what}: {exc}") from None
    except BackendError as exc:
        raise BackendFailedError(f"{what}: {exc}") from None


def _backend(runtime: PlatformRuntime) -> Any:
    return _backend_call(f"the {runtime.backend_name} backend", runtime.backend)


def _set_route(
    session: Session,
    caller: Caller,
    row: DeploymentRecord,
    prefix: str | None,
    forward_url: str | None,
    decrypt: bool,
) -> GatewayRoute | None:
    """Create or update the deployment's route (id = the deployment's name)."""
    route = session.execute(
        select(GatewayRoute).where(GatewayRoute.deployment_id == row.id)
    ).scalar_one_or_none()
    if prefix is None or forward_url is None:
        return route
    if route is None:
        _check_route(row.name, row.name, prefix, forward_url, decrypt=decrypt)
        route = GatewayRoute(
            id=new_id("rte"),
            vendor_id=caller.vendor_id,
            route_id=row.name,
            name=f"{row.namespace}/{row.name}",
            prefix=prefix,
            forward_url=forward_url.rstrip("/"),
            decrypt=decrypt,
            deployment_id=row.id,
            created_at=now_s(),
        )
        session.add(route)
    else:
        route.prefix = prefix
        route.forward_url = forward_url.rstrip("/")
        route.decrypt = decrypt
    _flush(session, f"another route already has the id {row.name!r} or the prefix {prefix!r}")
    return route


def _route_free(
    session: Session, caller: Caller, row_id: str | None, name: str, prefix: str
) -> None:
    clash = session.execute(
        select(GatewayRoute).where(
            GatewayRoute.vendor_id == caller.vendor_id,
            or_(GatewayRoute.route_id == name, GatewayRoute.prefix == prefix),
            or_(GatewayRoute.deployment_id.is_(None), GatewayRoute.deployment_id != (row_id or "")),
        )
    ).scalar_one_or_none()
    if clash is not None:
        raise ConflictError(
            f"route {clash.route_id!r} ({clash.prefix}) is in the way of this deployment's route"
        )


def create_deployment(
    session: Session,
    caller: Caller,
    box: SecretBox,
    runtime: PlatformRuntime,
    body: Any,
) -> tuple[DeploymentRecord, GatewayRoute | None]:
    """Reserve NodePorts, apply on the backend, record it, create or update its route.

    The ports and the record commit in the request's transaction; if
    anything after ``apply`` fails, the backend's new deployment is deleted
    again, so a refused request leaves nothing running.
    """
    from modelseal.deploy.errors import NodePortError
    from modelseal.deploy.nodeports import NodePortAllocator

    if (body.config is None) == (body.spec is None):
        raise InvalidRequestError("give exactly one of config (a stored config) and spec (YAML)")
    config = get_config(session, caller, body.config) if body.config is not None else None
    spec_text = config.spec_yaml if config is not None else body.spec
    deployment = _parse_spec(spec_text)
    envelope_key = body.envelope_key
    if envelope_key is None and deployment.spec.envelope_key is not None:
        key_row = session.get(GatewayKey, caller.vendor_id)
        envelope_key = key_row.public_pem if key_row is not None else None
    bundle = _bundle(deployment, body.license, envelope_key, body.trust)
    meta = deployment.metadata
    backend = _backend(runtime)
    row = session.execute(
        select(DeploymentRecord).where(
            DeploymentRecord.backend == backend.name,
            DeploymentRecord.namespace == meta.namespace,
            DeploymentRecord.name == meta.name,
        )
    ).scalar_one_or_none()
    if row is not None and row.vendor_id != caller.vendor_id:
        raise ConflictError(f"the name {meta.namespace}/{meta.name} is taken on this backend")
    prefix = deployment.spec.route.prefix if deployment.spec.route is not None else None
    if prefix is not None:
        _route_free(session, caller, row.id if row else None, meta.name, prefix)
    is_new = row is None
    if row is None:
        row = DeploymentRecord(
            id=new_id("dep"),
            vendor_id=caller.vendor_id,
            backend=backend.name,
            namespace=meta.namespace,
            name=meta.name,
            created_at=now_s(),
        )
        session.add(row)
    row.config_id = config.id if config is not None else None
    row.model_name = deployment.spec.model.name
    row.model_version = deployment.spec.model.version
    row.spec_yaml = spec_text
    row.updated_at = now_s()
    row.license_sealed = box.seal(body.license.encode(), purpose="deploy_license", row=row.id)
    _flush(session, f"the name {meta.namespace}/{meta.name} is taken on this backend")

    allocator = NodePortAllocator(
        DatabaseNodePortStore.in_session(session),
        runtime.port_range,
        cluster_used=lambda: _backend_call("NodePorts in use", backend.used_node_ports),
    )
    try:
        ports = allocator.allocate(
            row.id, deployment.spec.node_port_count, requested=body.node_ports
        )
    except NodePortError as exc:
        # exhausted or clashing ports: the state of the cluster, not a bad request body
        raise ConflictError(str(exc)) from None
    status = _backend_call("apply", backend.apply, bundle, ports)
    try:
        row.node_ports = list(ports)
        row.phase = status.phase
        row.forward_url = status.forward_url
        route = _set_route(session, caller, row, prefix, status.forward_url, body.decrypt)
        session.flush()
    except BaseException:
        if is_new:
            # the original error is what the caller needs; this is cleanup
            with contextlib.suppress(Exception):
                backend.delete(meta.namespace, meta.name)
        raise
    return row, route


def list_deployments(
    session: Session, caller: Caller, *, q: str | None = None, phase: str | None = None
) -> list[DeploymentRecord]:
    query = select(DeploymentRecord).where(DeploymentRecord.vendor_id == caller.vendor_id)
    if q:
        query = query.where(
            or_(_contains(DeploymentRecord.name, q), _contains(DeploymentRecord.model_name, q))
        )
    if phase:
        query = query.where(DeploymentRecord.phase == phase)
    return list(
        session.execute(
            query.order_by(DeploymentRecord.namespace, DeploymentRecord.name).limit(LIST_LIMIT)
        ).scalars()
    )


def get_deployment(session: Session, caller: Caller, ref: str) -> DeploymentRecord:
    row = session.execute(
        select(DeploymentRecord).where(
            DeploymentRecord.vendor_id == caller.vendor_id,
            or_(DeploymentRecord.id == ref, DeploymentRecord.name == ref),
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no deployment {ref!r}")
    return row


def route_of(session: Session, row: DeploymentRecord) -> GatewayRoute | None:
    return session.execute(
        select(GatewayRoute).where(GatewayRoute.deployment_id == row.id)
    ).scalar_one_or_none()


def deployment_status(
    session: Session, caller: Caller, runtime: PlatformRuntime, ref: str
) -> tuple[DeploymentRecord, Any]:
    """Ask the backend; record the phase, and follow a forward URL that moved."""
    from modelseal.deploy.backends import DeploymentNotFoundError, DeploymentStatus

    row = get_deployment(session, caller, ref)
    backend = _backend(runtime)
    try:
        status = _backend_call("status", backend.status, row.namespace, row.name)
    except DeploymentNotFoundError as exc:
        # e.g. the local backend's processes ended with a previous server process:
        # the record stays (delete it, or deploy again) and says what happened
        status = DeploymentStatus(
            namespace=row.namespace,
            name=row.name,
            backend=row.backend,
            phase="Failed",
            replicas=0,
            ready_replicas=0,
            node_ports=tuple(row.node_ports),
            message=str(exc),
        )
        row.phase = status.phase
        return row, status
    row.phase = status.phase
    if status.forward_url and status.forward_url != row.forward_url:
        row.forward_url = status.forward_url
    deployment = _parse_spec(row.spec_yaml)
    prefix = deployment.spec.route.prefix if deployment.spec.route is not None else None
    route = route_of(session, row)
    _set_route(
        session,
        caller,
        row,
        prefix,
        row.forward_url,
        route.decrypt if route is not None else True,
    )
    return row, status


def deployment_logs(
    session: Session, caller: Caller, runtime: PlatformRuntime, ref: str, tail: int
) -> tuple[DeploymentRecord, str]:
    row = get_deployment(session, caller, ref)
    logs = _backend_call("logs", _backend(runtime).logs, row.namespace, row.name, tail=tail)
    return row, str(logs)


def delete_deployment(
    session: Session, caller: Caller, runtime: PlatformRuntime, ref: str
) -> tuple[DeploymentRecord, Sequence[int]]:
    """Stop it on the backend, free its NodePorts and its route, forget it."""
    row = get_deployment(session, caller, ref)
    from modelseal.deploy.backends import DeploymentNotFoundError

    backend = _backend(runtime)
    with contextlib.suppress(DeploymentNotFoundError):  # gone already: the records still go
        _backend_call("delete", backend.delete, row.namespace, row.name)
    freed = DatabaseNodePortStore.in_session(session).release(row.id)
    session.execute(delete(GatewayRoute).where(GatewayRoute.deployment_id == row.id))
    session.delete(row)
    session.flush()
    return row, freed


def node_ports(
    session: Session, caller: Caller, runtime: PlatformRuntime, count: int
) -> tuple[list[NodePortRecord], tuple[int, ...]]:
    """The used records (owners shown only for the caller's deployments) and a recommendation."""
    from modelseal.deploy.nodeports import recommend_node_ports

    rows = list(session.execute(select(NodePortRecord).order_by(NodePortRecord.port)).scalars())
    mine = set(
        session.execute(
            select(DeploymentRecord.id).where(DeploymentRecord.vendor_id == caller.vendor_id)
        ).scalars()
    )
    shown = [
        NodePortRecord(port=r.port, owner=r.owner if r.owner in mine else "(another tenant)")
        for r in rows
    ]
    used = {r.port for r in rows}
    with contextlib.suppress(ModelsealError):  # a recommendation without the cluster's view
        used |= set(_backend(runtime).used_node_ports())
    try:
        recommended = recommend_node_ports(count, used, runtime.port_range)
    except ModelsealError:
        recommended = ()
    return shown, recommended
