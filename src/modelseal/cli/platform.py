"""``modelseal platform``: the model manager's registry and deployments over the control
plane's Platform API (docs/platform.md).

Server and token from ``--server`` / ``--token-file`` or ``MODELSEAL_SERVER`` /
``MODELSEAL_TOKEN_FILE``, as ``modelseal admin``. Tables for people, ``--json``
for machines, one-line errors with the exit codes of docs/cli.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from modelseal._http import call
from modelseal.cli._common import emit_json, errors_as_exit_codes, fail, out
from modelseal.cli._server import Json, q, show, target

app = typer.Typer(
    help="The platform: model vendors, models, documents, deployment configs, images, "
    "deployments, gateway routes and API keys.",
    no_args_is_help=True,
)
vendors = typer.Typer(help="Model vendors (who delivers models).", no_args_is_help=True)
models = typer.Typer(help="Registered models and their versions.", no_args_is_help=True)
documents = typer.Typer(help="Design, usage and test documents.", no_args_is_help=True)
configs = typer.Typer(help="The library of deployment configs.", no_args_is_help=True)
images = typer.Typer(help="The image library.", no_args_is_help=True)
deployments = typer.Typer(help="Deployments on the server's backend.", no_args_is_help=True)
routes = typer.Typer(help="Gateway routes.", no_args_is_help=True)
keys = typer.Typer(help="Model users' API keys for the gateway.", no_args_is_help=True)
for sub, name in (
    (vendors, "vendors"),
    (models, "models"),
    (documents, "documents"),
    (configs, "configs"),
    (images, "images"),
    (deployments, "deployments"),
    (routes, "routes"),
    (keys, "keys"),
):
    app.add_typer(sub, name=name)

P = "/v1/platform"
Search = Annotated[str | None, typer.Option("--search", "-q", help="substring to look for")]
Ref = Annotated[str, typer.Argument(help="id or name")]


@app.callback()
def connect(
    ctx: typer.Context,
    server: Annotated[
        str | None, typer.Option(envvar="MODELSEAL_SERVER", help="the control plane's URL")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(envvar="MODELSEAL_TOKEN_FILE", help="file holding an API token")
    ] = None,
) -> None:
    """Where the control plane is and which token to use.

    Example: modelseal platform --server http://127.0.0.1:8400 --token-file t models list
    """
    ctx.obj = (server, token_file)


_target = target
_show = show
_q = q


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"{what}: no such file: {path}", 3)
    except UnicodeDecodeError:
        fail(f"{what}: {path} is not UTF-8 text", 3)
    except OSError as exc:
        fail(f"{what}: cannot read {path}: {exc.strerror}", 3)


VENDOR_COLS = ["id", "name", "business", "address", "phone"]
MODEL_COLS = ["id", "name", "vendor", "function", "language", "versions"]
DOC_COLS = ["id", "model_id", "kind", "filename", "content_type", "size"]
CONFIG_COLS = ["id", "name", "namespace", "deployment_name", "image", "model_id"]
IMAGE_COLS = ["id", "name", "address", "digest"]
DEPLOY_COLS = ["id", "namespace", "name", "backend", "phase", "node_ports", "forward_url", "route"]
ROUTE_COLS = ["id", "prefix", "forward_url", "decrypt", "deployment_id"]
KEY_COLS = ["id", "name", "routes", "rate_limit", "revoked_at"]


def _models_for_table(rows: Any) -> Any:
    for row in rows if isinstance(rows, list) else [rows]:
        row["versions"] = ", ".join(v["version"] for v in row.get("versions", []))
    return rows


# --- vendors -----------------------------------------------------------------------------------


@vendors.command("create")
def vendors_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="company name")],
    address: Annotated[str, typer.Option(help="postal address")] = "",
    phone: Annotated[str, typer.Option(help="phone number")] = "",
    business: Annotated[str, typer.Option(help="what they do")] = "",
    as_json: Json = False,
) -> None:
    """Example: modelseal platform vendors create --name "Acme AI" --business imaging"""
    with errors_as_exit_codes():
        body = {"name": name, "address": address, "phone": phone, "business": business}
        _show(_target(ctx).post(f"{P}/vendors", body), as_json, VENDOR_COLS, "vendor created")


@vendors.command("list")
def vendors_list(
    ctx: typer.Context,
    search: Search = None,
    business: Annotated[str | None, typer.Option(help="filter on the business")] = None,
    as_json: Json = False,
) -> None:
    """Example: modelseal platform vendors list --search acme"""
    with errors_as_exit_codes():
        data = _target(ctx).get(f"{P}/vendors", q=search, business=business)
        _show(data, as_json, VENDOR_COLS, "model vendors")


@vendors.command("show")
def vendors_show(ctx: typer.Context, ref: Ref, as_json: Json = False) -> None:
    """Example: modelseal platform vendors show "Acme AI" """
    with errors_as_exit_codes():
        _show(_target(ctx).get(f"{P}/vendors/{_q(ref)}"), as_json, VENDOR_COLS, "model vendor")


@vendors.command("delete")
def vendors_delete(ctx: typer.Context, ref: Ref, as_json: Json = False) -> None:
    """Refused while the vendor has models. Example: modelseal platform vendors delete mvn_..."""
    with errors_as_exit_codes():
        data = _target(ctx).delete(f"{P}/vendors/{_q(ref)}")
        _show(data, as_json, VENDOR_COLS, "vendor deleted")


# --- models ------------------------------------------------------------------------------------


@models.command("create")
def models_create(
    ctx: typer.Context,
    vendor: Annotated[str, typer.Option(help="the model vendor (id or name)")],
    name: Annotated[str, typer.Option(help="model name")],
    function: Annotated[str, typer.Option(help="what it does")] = "",
    language: Annotated[str, typer.Option(help="programming language")] = "",
    version: Annotated[str | None, typer.Option(help="its first version")] = None,
    config_url: Annotated[str, typer.Option(help="config file address")] = "",
    image_name: Annotated[str, typer.Option(help="image name")] = "",
    image_url: Annotated[str, typer.Option(help="image address")] = "",
    as_json: Json = False,
) -> None:
    """Example: modelseal platform models create --vendor "Acme AI" --name demo --version 1.0.0"""
    with errors_as_exit_codes():
        body: dict[str, Any] = {
            "vendor": vendor,
            "name": name,
            "function": function,
            "language": language,
        }
        if version is not None:
            body["version"] = {
                "version": version,
                "config_url": config_url,
                "image_name": image_name,
                "image_url": image_url,
            }
        elif config_url or image_name or image_url:
            fail("--config-url, --image-name and --image-url belong to a --version", 2)
        data = _target(ctx).post(f"{P}/models", body)
        _show(data if as_json else _models_for_table(data), as_json, MODEL_COLS, "model created")


@models.command("add-version")
def models_add_version(
    ctx: typer.Context,
    ref: Ref,
    version: Annotated[str, typer.Option(help="e.g. 1.1.0")],
    config_url: Annotated[str, typer.Option(help="config file address")] = "",
    image_name: Annotated[str, typer.Option(help="image name")] = "",
    image_url: Annotated[str, typer.Option(help="image address")] = "",
    as_json: Json = False,
) -> None:
    """Example: modelseal platform models add-version demo --version 1.1.0"""
    with errors_as_exit_codes():
        body = {
            "version": version,
            "config_url": config_url,
            "image_name": image_name,
            "image_url": image_url,
        }
        data = _target(ctx).post(f"{P}/models/{_q(ref)}/versions", body)
        _show(data, as_json, ["id", "version", "config_url", "image_url"], "version added")


@models.command("list")
def models_list(
    ctx: typer.Context,
    search: Search = None,
    vendor: Annotated[str | None, typer.Option(help="only this vendor's")] = None,
    language: Annotated[str | None, typer.Option(help="only in this language")] = None,
    as_json: Json = False,
) -> None:
    """Example: modelseal platform models list --vendor "Acme AI" --language python"""
    with errors_as_exit_codes():
        data = _target(ctx).get(f"{P}/models", q=search, vendor=vendor, language=language)
        _show(data if as_json else _models_for_table(data), as_json, MODEL_COLS, "models")


@models.command("show")
def models_show(ctx: typer.Context, ref: Ref, as_json: Json = False) -> None:
    """Example: modelseal platform models show demo"""
    with errors_as_exit_codes():
        data = _target(ctx).get(f"{P}/models/{_q(ref)}")
        _show(data if as_json else _models_for_table(data), as_json, MODEL_COLS, "model")


@models.command("delete")
def models_delete(ctx: typer.Context, ref: Ref, as_json: Json = False) -> None:
    """Deletes its versions and documents too. Example: modelseal platform models delete demo"""
    with errors_as_exit_codes():
        data = _target(ctx).delete(f"{P}/models/{_q(ref)}")
        _show(data if as_json else _models_for_table(data), as_json, MODEL_COLS, "model deleted")


# --- documents ------------------------------------------------------------------------------


@documents.command("upload")
def documents_upload(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="the model (id or name)")],
    path: Annotated[Path, typer.Argument(help="the document")],
    kind: Annotated[str, typer.Option(help="design, usage or test")],
    as_json: Json = False,
) -> None:
    """The server judges the type from the bytes (PDF, PNG, JPEG, Office, ZIP, Markdown,
    JSON, text). Example: modelseal platform documents upload demo usage.pdf --kind usage"""
    if kind not in ("design", "usage", "test"):
        fail("--kind must be design, usage or test", 2)
    with errors_as_exit_codes():
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            fail(f"no such file: {path}", 3)
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror}", 3)
        target = _target(ctx)
        _ctype, body = call(
            "POST",
            target.url(f"{P}/models/{_q(model)}/documents", {"kind": kind, "filename": path.name}),
            data=data,
            token=target.token,
            headers={"Content-Type": "application/octet-stream"},
            timeout=120,
        )
        _show(json.loads(body), as_json, DOC_COLS, "document uploaded")


@documents.command("list")
def documents_list(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="only this model's")] = None,
    kind: Annotated[str | None, typer.Option(help="design, usage or test")] = None,
    search: Search = None,
    as_json: Json = False,
) -> None:
    """Example: modelseal platform documents list --model demo --kind usage"""
    with errors_as_exit_codes():
        data = _target(ctx).get(f"{P}/documents", model=model, kind=kind, q=search)
        _show(data, as_json, DOC_COLS, "documents")


@documents.command("show")
def documents_show(ctx: typer.Context, ref: Ref, as_json: Json = False) -> None:
    """Example: modelseal platform documents show doc_..."""
    with errors_as_exit_codes():
        _show(_target(ctx).get(f"{P}/documents/{_q(ref)}"), as_json, DOC_COLS, "document")


@documents.command("download")
def documents_download(
    ctx: typer.Context,
    ref: Ref,
    out_path: Annotated[Path, typer.Option("--out", help="where to write it")],
    force: Annotated[bool, typer.Option(help="overwrite --out")] = False,
    as_json: Json = False,
) -> None:
    """Written atomically; the digest is checked. Example: ... download doc_... --out u.pdf"""
    import hashlib

    from modelseal._fs import write_file

    with errors_as_exit_codes():
        target = _target(ctx)
        meta = target.get(f"{P}/documents/{_q(ref)}")
        _ctype, body = call(
            "GET",
            target.url(f"{P}/documents/{_q(ref)}/content"),
            token=target.token,
            headers={"Accept": "*/*"},
            timeout=120,
        )
        if hashlib.sha256(body).hexdigest() != meta["sha256"]:
            fail("the downloaded document does not match its digest; nothing written", 4)
        write_file(out_path, body, overwrite=force)
        if as_json:
            emit_json({"ok": True, "path": str(out_path), **meta})
        else:
            out.print(f"wrote {out_path} ({meta['size']} bytes, {meta['content_type']})")


@documents.command("delete")
def documents_delete(ctx: typer.Context, ref: Ref, as_json: Json = False) -> None:
    """Example: modelseal platform documents delete doc_..."""
    with errors_as_exit_codes():
        data = _target(ctx).delete(f"{P}/documents/{_q(ref)}")
        _show(data, as_json, DOC_COLS, "document deleted")


# --- configs ----------------------------------------------------------------------------------


@configs.command("create")
def configs_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="config name")],
    spec: Annotated[Path, typer.Option("--file", "-f", help="the ModelDeployment YAML")],
    model: Annotated[str | None, typer.Option(help="the registered model it deploys")] = None,
    as_json: Json = False,
) -> None:
    """The spec is validated by the server (errors name the field).

    Example: modelseal platform configs create --name demo-prod -f deploy.yaml --model demo
    """
    with errors_as_exit_codes():
        body = {"name": name, "spec": _read_text(spec, "--file"), "model": model}
        data = _target(ctx).post(f"{P}/configs", body)
        _show(data, as_json, CONFIG_COLS, "config stored")


@configs.command("list")
def configs_list(
    ctx: typer.Context,
    search: Search = None,
    model: Annotated[str | None, typer.Option(help="only for this model")] = None,
    as_json: Json = False,
) -> None:
    """Example: modelseal platform configs list --search demo"""
    with errors_as_exit_codes():
        _show(
            _target(ctx).get(f"{P}/configs", q=search, model=model), as_json, CONFIG_COLS, "configs"
        )


@configs.command("show")
def configs_show(ctx: typer.Context, ref: Ref, as_json: Json = False) -> None:
    """Prints the stored YAML (``--json`` for the record). Example: ... configs show demo-prod"""
    with errors_as_exit_codes():
        data = _target(ctx).get(f"{P}/configs/{_q(ref)}")
        if as_json:
            emit_json(data)
        else:
            out.print(data["spec"], highlight=False, soft_wrap=True, end="")


@configs.command("delete")
def configs_delete(ctx: typer.Context, ref: Ref, as_json: Json = False) -> None:
    """Example: modelseal platform configs delete demo-prod"""
    with errors_as_exit_codes():
        data = _target(ctx).delete(f"{P}/configs/{_q(ref)}")
        _show(data, as_json, CONFIG_COLS, "config deleted")


# --- images -------------------------------------------------------------------------------------


@images.command("create")
def images_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="image name")],
    address: Annotated[str, typer.Option(help="registry/repository:tag")],
    digest: Annotated[str | None, typer.Option(help="sha256:...")] = None,
    as_json: Json = False,
) -> None:
    """Example: modelseal platform images create --name demo --address reg.example/acme/demo:1"""
    with errors_as_exit_codes():
        body = {"name": name, "address": address, "digest": digest}
        _show(_target(ctx).post(f"{P}/images", body), as_json, IMAGE_COLS, "image registered")


@images.command("list")
def images_list(ctx: typer.Context, search: Search = None, as_json: Json = False) -> None:
    """Example: modelseal platform images list --search acme"""
    with errors_as_exit_codes():
        _show(_target(ctx).get(f"{P}/images", q=search), as_json, IMAGE_COLS, "images")


@images.command("show")
def images_show(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="id")], as_json: Json = False
) -> None:
    """Example: modelseal platform images show img_..."""
    with errors_as_exit_codes():
        _show(_target(ctx).get(f"{P}/images/{_q(ref)}"), as_json, IMAGE_COLS, "image")


@images.command("delete")
def images_delete(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="id")], as_json: Json = False
) -> None:
    """Example: modelseal platform images delete img_..."""
    with errors_as_exit_codes():
        _show(_target(ctx).delete(f"{P}/images/{_q(ref)}"), as_json, IMAGE_COLS, "image deleted")


# --- deployments --------------------------------------------------------------------------------


@deployments.command("create")
def deployments_create(
    ctx: typer.Context,
    license_file: Annotated[Path, typer.Option("--license", help="the license the spec names")],
    config: Annotated[str | None, typer.Option(help="a stored config (id or name)")] = None,
    spec: Annotated[Path | None, typer.Option("--spec", help="or a ModelDeployment YAML")] = None,
    envelope_key: Annotated[
        Path | None, typer.Option(help="the gateway's SM2 public key (default: the platform's)")
    ] = None,
    trust: Annotated[Path | None, typer.Option(help="the trust file the spec names")] = None,
    no_decrypt: Annotated[bool, typer.Option(help="the route passes envelopes through")] = False,
    node_port: Annotated[
        list[int] | None,
        typer.Option(min=1, max=65535, help="a NodePort by number (repeat; default: recommended)"),
    ] = None,
    as_json: Json = False,
) -> None:
    """Reserve NodePorts, run it on the server's backend, create its gateway route.

    Example: modelseal platform deployments create --config demo-prod --license license.jwt
    """
    if (config is None) == (spec is None):
        fail("give exactly one of --config NAME and --spec FILE", 2)
    with errors_as_exit_codes():
        body: dict[str, Any] = {
            "license": _read_text(license_file, "--license"),
            "decrypt": not no_decrypt,
        }
        if config is not None:
            body["config"] = config
        if spec is not None:
            body["spec"] = _read_text(spec, "--spec")
        if envelope_key is not None:
            body["envelope_key"] = _read_text(envelope_key, "--envelope-key")
        if trust is not None:
            body["trust"] = _read_text(trust, "--trust")
        if node_port:
            body["node_ports"] = list(node_port)
        data = _target(ctx).post(f"{P}/deployments", body)
        _show(data, as_json, DEPLOY_COLS, "deployed")


@deployments.command("list")
def deployments_list(ctx: typer.Context, search: Search = None, as_json: Json = False) -> None:
    """Example: modelseal platform deployments list"""
    with errors_as_exit_codes():
        _show(_target(ctx).get(f"{P}/deployments", q=search), as_json, DEPLOY_COLS, "deployments")


@deployments.command("nodeports")
def deployments_nodeports(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(min=1, max=16, help="ports a deployment needs")] = 1,
    as_json: Json = False,
) -> None:
    """The used NodePort records and what a deployment would be given now.

    Example: modelseal platform deployments nodeports --count 2
    """
    with errors_as_exit_codes():
        data = _target(ctx).get(f"{P}/nodeports", count=count)
        if as_json:
            emit_json(data)
            return
        _show(data["used"], False, ["port", "owner"], f"NodePorts used in {data['range']}")
        out.print(f"recommended: {', '.join(map(str, data['recommended'])) or 'none free'}")


@deployments.command("status")
def deployments_status(ctx: typer.Context, ref: Ref, as_json: Json = False) -> None:
    """Asks the backend now. Example: modelseal platform deployments status demo-classifier"""
    with errors_as_exit_codes():
        data = _target(ctx).get(f"{P}/deployments/{_q(ref)}/status")
        cols = ["name", "phase", "ready_replicas", "replicas", "restarts", "forward_url", "message"]
        _show(data, as_json, cols, "status")


@deployments.command("logs")
def deployments_logs(
    ctx: typer.Context,
    ref: Ref,
    tail: Annotated[int, typer.Option(min=1, max=10000, help="last N lines")] = 200,
    as_json: Json = False,
) -> None:
    """Example: modelseal platform deployments logs demo-classifier --tail 50"""
    with errors_as_exit_codes():
        data = _target(ctx).get(f"{P}/deployments/{_q(ref)}/logs", tail=tail)
        if as_json:
            emit_json(data)
        else:
            out.print(data["logs"], highlight=False, soft_wrap=True, markup=False, end="")


@deployments.command("delete")
def deployments_delete(ctx: typer.Context, ref: Ref, as_json: Json = False) -> None:
    """Stops it, frees its NodePorts and its route. Example: ... deployments delete demo"""
    with errors_as_exit_codes():
        data = _target(ctx).delete(f"{P}/deployments/{_q(ref)}")
        _show(data, as_json, DEPLOY_COLS, "deleted")


# --- routes and keys --------------------------------------------------------------------------


@routes.command("list")
def routes_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Example: modelseal platform routes list"""
    with errors_as_exit_codes():
        _show(_target(ctx).get(f"{P}/routes"), as_json, ROUTE_COLS, "routes")


@routes.command("create")
def routes_create(
    ctx: typer.Context,
    route_id: Annotated[str, typer.Option("--id", help="route id (a-z, 0-9, _ -)")],
    prefix: Annotated[str, typer.Option(help="path prefix, e.g. /demo")],
    forward_url: Annotated[str, typer.Option(help="http://host:port or http://host:port/base")],
    no_decrypt: Annotated[bool, typer.Option(help="pass answers through unchanged")] = False,
    as_json: Json = False,
) -> None:
    """A route not made by a deployment. Example: ... routes create --id echo --prefix /echo
    --forward-url http://10.0.0.5:8080 --no-decrypt"""
    with errors_as_exit_codes():
        body = {
            "id": route_id,
            "prefix": prefix,
            "forward_url": forward_url,
            "decrypt": not no_decrypt,
        }
        _show(_target(ctx).post(f"{P}/routes", body), as_json, ROUTE_COLS, "route created")


@routes.command("delete")
def routes_delete(ctx: typer.Context, ref: Ref, as_json: Json = False) -> None:
    """Example: modelseal platform routes delete echo"""
    with errors_as_exit_codes():
        _show(_target(ctx).delete(f"{P}/routes/{_q(ref)}"), as_json, ROUTE_COLS, "route deleted")


@keys.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="who the key is for")],
    route_ids: Annotated[
        str, typer.Option("--routes", help="comma-separated route ids, or *")
    ] = "*",
    rate_limit: Annotated[str | None, typer.Option(help="e.g. 50/s, 600/min")] = None,
    as_json: Json = False,
) -> None:
    """Printed once; the server keeps only its hash. Example: ... keys create --name radiology
    --routes demo-classifier --rate-limit 50/s"""
    with errors_as_exit_codes():
        ids = [r.strip() for r in route_ids.split(",") if r.strip()]
        if not ids:
            fail("--routes needs at least one route id", 2)
        body = {"name": name, "routes": ids, "rate_limit": rate_limit}
        data = _target(ctx).post(f"{P}/api-keys", body)
        if as_json:
            emit_json(data)
        else:
            out.print(
                f"API key for {name} (shown once; give it to the user):\n{data['key']}",
                highlight=False,
            )


@keys.command("list")
def keys_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Example: modelseal platform keys list"""
    with errors_as_exit_codes():
        _show(_target(ctx).get(f"{P}/api-keys"), as_json, KEY_COLS, "API keys")


@keys.command("revoke")
def keys_revoke(ctx: typer.Context, ref: Ref, as_json: Json = False) -> None:
    """Gateways following the control plane drop it within a poll. Example: ... keys revoke bob"""
    with errors_as_exit_codes():
        _show(_target(ctx).post(f"{P}/api-keys/{_q(ref)}/revoke"), as_json, KEY_COLS, "revoked")


gateway_key = typer.Typer(help="The gateway's SM2 envelope key, kept on the platform.")
app.add_typer(gateway_key, name="gateway-key", no_args_is_help=True)


@gateway_key.command("create")
def gateway_key_create(
    ctx: typer.Context,
    public_out: Annotated[
        Path | None, typer.Option("--public-out", help="also write the public key here")
    ] = None,
    as_json: Json = False,
) -> None:
    """Make the key pair on the server (once); deployments encrypt to its public half.

    Example: modelseal platform gateway-key create --public-out gateway-sm2.pub
    """
    from modelseal._fs import write_file

    with errors_as_exit_codes():
        data = _target(ctx).post(f"{P}/gateway/key")
        if public_out is not None:
            write_file(public_out, data["public_pem"].encode())
        _show(data, as_json, ["kid", "created_at"], "gateway key created")


@gateway_key.command("show")
def gateway_key_show(ctx: typer.Context, as_json: Json = False) -> None:
    """Prints the public key (PEM). Example: modelseal platform gateway-key show"""
    with errors_as_exit_codes():
        data = _target(ctx).get(f"{P}/gateway/key")
        if as_json:
            emit_json(data)
        else:
            out.print(data["public_pem"], highlight=False, end="")
