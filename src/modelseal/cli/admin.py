"""``modelseal admin``: manage a license server over its API (docs/controlplane.md).

Server and token from ``--server`` / ``--token-file`` or ``MODELSEAL_SERVER``
/ ``MODELSEAL_TOKEN_FILE``. Tables for people, ``--json`` for machines,
one-line errors with the exit codes of docs/cli.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from modelseal.cli._common import emit_json, errors_as_exit_codes, fail, out
from modelseal.cli._server import Json, q, show, table, target

app = typer.Typer(
    help="Manage a license server: plans, customers, models, orders, licenses.",
    no_args_is_help=True,
)
plans = typer.Typer(help="Plans: what a license grants.", no_args_is_help=True)
customers = typer.Typer(help="Customers.", no_args_is_help=True)
models = typer.Typer(help="Sealed models the server can deliver keys for.", no_args_is_help=True)
orders = typer.Typer(
    help="Orders: a customer buys a plan for models -> a license.", no_args_is_help=True
)
licenses = typer.Typer(help="Licenses and their license keys.", no_args_is_help=True)
devices = typer.Typer(help="Activated devices.", no_args_is_help=True)
keys = typer.Typer(help="The vendor's signing keys and trust set.", no_args_is_help=True)
tokens = typer.Typer(help="API tokens (owner only).", no_args_is_help=True)
for sub, name in (
    (plans, "plans"),
    (customers, "customers"),
    (models, "models"),
    (orders, "orders"),
    (licenses, "licenses"),
    (devices, "devices"),
    (keys, "keys"),
    (tokens, "tokens"),
):
    app.add_typer(sub, name=name)


@app.callback()
def connect(
    ctx: typer.Context,
    server: Annotated[
        str | None, typer.Option(envvar="MODELSEAL_SERVER", help="the server's URL")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(envvar="MODELSEAL_TOKEN_FILE", help="file holding an API token")
    ] = None,
) -> None:
    """Where the server is and which token to use.

    Example: modelseal admin --server http://127.0.0.1:8400 --token-file t plans list
    """
    ctx.obj = (server, token_file)


_target = target
_table = table
_show = show
_q = q


_DURATION = re.compile(r"^(\d+)([smhd]?)$")


def _seconds(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    match = _DURATION.match(text.strip())
    if not match:
        fail(f"{what} must look like 30s, 10m, 72h or 7d", 2)
    n, unit = int(match.group(1)), match.group(2) or "s"
    return n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


PLAN_COLS = [
    "id",
    "name",
    "kind",
    "days",
    "features",
    "max_calls",
    "max_devices",
    "grace_seconds",
    "heartbeat_interval",
    "offline_calls",
]
LICENSE_COLS = ["id", "customer_id", "status", "models", "devices", "calls_leased", "expires_at"]
DEVICE_COLS = [
    "id",
    "license_id",
    "label",
    "status",
    "flag",
    "last_seen",
    "calls_used",
    "lease_end",
]


# --- plans ---------------------------------------------------------------------------------


@plans.command("create")
def plans_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="plan name")],
    kind: Annotated[str, typer.Option(help="trial, subscription or perpetual")] = "subscription",
    days: Annotated[int | None, typer.Option(min=1, help="validity (trial, subscription)")] = None,
    features: Annotated[str, typer.Option(help="comma-separated feature tiers")] = "",
    max_calls: Annotated[int | None, typer.Option(min=1, help="call quota")] = None,
    offline_calls: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="calls a device may spend beyond its leases while offline "
            "(with --max-calls; default min(max-calls, 100))",
        ),
    ] = None,
    max_devices: Annotated[int | None, typer.Option(min=1, help="devices per license")] = None,
    grace: Annotated[str | None, typer.Option(help="offline grace, e.g. 72h")] = None,
    heartbeat: Annotated[str, typer.Option(help="heartbeat interval, e.g. 10m")] = "1h",
    threshold: Annotated[int | None, typer.Option(min=1, help="binding threshold k")] = None,
    strict_binding: Annotated[bool, typer.Option(help="refuse weak-only bindings")] = False,
    as_json: Json = False,
) -> None:
    """Example: modelseal admin plans create --name pro --days 365 --features ocr --max-devices 5"""
    with errors_as_exit_codes():
        body = {
            "name": name,
            "kind": kind,
            "days": days,
            "features": [f for f in features.split(",") if f],
            "max_calls": max_calls,
            "offline_calls": offline_calls,
            "max_devices": max_devices,
            "grace_seconds": _seconds(grace, "--grace"),
            "heartbeat_interval": _seconds(heartbeat, "--heartbeat"),
            "threshold": threshold,
            "strict_binding": strict_binding,
        }
        _show(_target(ctx).post("/v1/plans", body), as_json, PLAN_COLS, "plan created")


@plans.command("set-max-devices")
def plans_set_max_devices(
    ctx: typer.Context,
    plan: Annotated[str, typer.Argument(help="plan id or name")],
    limit: Annotated[str, typer.Argument(help="devices per license, or 'unlimited'")],
    as_json: Json = False,
) -> None:
    """Change a plan's device limit; issued licenses follow it at their next heartbeat.

    Lowered below a license's active devices, the newest seats hear
    TOO_MANY_DEVICES and lock until a seat is freed or the limit raised.

    Example: modelseal admin plans set-max-devices pro 3
    """
    with errors_as_exit_codes():
        if limit == "unlimited":
            value: int | None = None
        elif limit.isdigit() and int(limit) >= 1:
            value = int(limit)
        else:
            fail("the limit is a number of devices (>= 1) or 'unlimited'", 2)
        data = _target(ctx).patch(f"/v1/plans/{_q(plan)}", {"max_devices": value})
        _show(data, as_json, PLAN_COLS, "plan updated")


@plans.command("list")
def plans_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Example: modelseal admin plans list --json"""
    with errors_as_exit_codes():
        _show(_target(ctx).get("/v1/plans"), as_json, PLAN_COLS, "plans")


# --- customers -------------------------------------------------------------------------------


@customers.command("create")
def customers_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="customer name")],
    as_json: Json = False,
) -> None:
    """Example: modelseal admin customers create --name "St. Mary's Hospital" """
    with errors_as_exit_codes():
        data = _target(ctx).post("/v1/customers", {"name": name})
        _show(data, as_json, ["id", "name"], "customer created")


@customers.command("list")
def customers_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Example: modelseal admin customers list"""
    with errors_as_exit_codes():
        _show(_target(ctx).get("/v1/customers"), as_json, ["id", "name"], "customers")


@customers.command("usage")
def customers_usage(ctx: typer.Context, customer: str, as_json: Json = False) -> None:
    """The server's usage ledger for one customer, per license and in total.

    ``calls_leased`` is what the quota is enforced on (calls leased to devices
    plus calls they spent beyond leases); ``calls_used`` what devices reported.

    Example: modelseal admin customers usage "St. Mary" --json
    """
    with errors_as_exit_codes():
        data = _target(ctx).get(f"/v1/customers/{_q(customer)}/usage")
        if as_json:
            emit_json(data)
            return
        total = {**data, "license_id": "total", "max_calls": None}
        _table(
            [*data["by_license"], total],
            ["license_id", "max_calls", "calls_leased", "calls_used", "devices"],
            f"usage of {data['customer_id']}",
        )


# --- models ----------------------------------------------------------------------------------


@models.command("add")
def models_add(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="the sealed model (.mseal)")],
    content_key: Annotated[Path, typer.Option("--content-key", help="its content key file")],
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    model_id: Annotated[str | None, typer.Option(help="if the header names none")] = None,
    as_json: Json = False,
) -> None:
    """Register a sealed model: its header's ids and its content key (sent, stored encrypted).

    Example: modelseal admin models add ocr.mseal --content-key ocr.key
    """
    with errors_as_exit_codes():
        from modelseal.crypto import ContentKey, b64url
        from modelseal.sealed import read_header

        header = read_header(path)
        key = ContentKey.load(content_key)
        if key.key_id != header.key_id:
            fail(f"{content_key} is not the key {path} was sealed with", 5)
        mid = model_id or header.model_id
        if not mid:
            fail(f"{path} names no model id; give --model-id", 2)
        body = {
            "model_id": mid,
            "key_id": header.key_id,
            "content_key": b64url(key.raw()),
            "name": name,
            "framework": header.framework,
        }
        data = _target(ctx).post("/v1/models", body)
        _show(data, as_json, ["id", "model_id", "key_id", "name"], "model registered")


@models.command("list")
def models_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Example: modelseal admin models list"""
    with errors_as_exit_codes():
        _show(
            _target(ctx).get("/v1/models"), as_json, ["id", "model_id", "key_id", "name"], "models"
        )


# --- orders and licenses -----------------------------------------------------------------------


@orders.command("create")
def orders_create(
    ctx: typer.Context,
    customer: Annotated[str, typer.Option(help="customer id or name")],
    plan: Annotated[str, typer.Option(help="plan id or name")],
    model: Annotated[list[str], typer.Option(help="model id (mdl_...); repeat for several")],
    idempotency_key: Annotated[
        str | None, typer.Option(help="retrying with the same key never creates a second license")
    ] = None,
    as_json: Json = False,
) -> None:
    """Create a license for an order and print its license key.

    Example: modelseal admin orders create --customer acme --plan pro --model mdl_1a2b
    """
    with errors_as_exit_codes():
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        data = _target(ctx).post(
            "/v1/orders", {"customer": customer, "plan": plan, "models": model}, headers
        )
        if as_json:
            emit_json({"license_id": data["id"], "license_key": data["license_key"]})
        else:
            out.print(data["license_key"])


@licenses.command("list")
def licenses_list(
    ctx: typer.Context,
    customer: Annotated[str | None, typer.Option(help="only this customer's")] = None,
    as_json: Json = False,
) -> None:
    """Example: modelseal admin licenses list --customer acme"""
    with errors_as_exit_codes():
        path = "/v1/licenses" + (f"?customer={_q(customer)}" if customer else "")
        _show(_target(ctx).get(path), as_json, LICENSE_COLS, "licenses")


@licenses.command("show")
def licenses_show(ctx: typer.Context, license: str, as_json: Json = False) -> None:
    """LICENSE is a license id or a license key. Example: modelseal admin licenses show lic_..."""
    with errors_as_exit_codes():
        _show(_target(ctx).get(f"/v1/licenses/{_q(license)}"), as_json, LICENSE_COLS, "license")


@licenses.command("key")
def licenses_key(ctx: typer.Context, license: str, as_json: Json = False) -> None:
    """Show a license's key again (to read it to the customer).

    Example: modelseal admin licenses key lic_...
    """
    with errors_as_exit_codes():
        data = _target(ctx).get(f"/v1/licenses/{_q(license)}/key")
        if as_json:
            emit_json(data)
        else:
            out.print(data["license_key"])


def _action(ctx: typer.Context, license: str, action: str, as_json: bool, body: Any = None) -> None:
    with errors_as_exit_codes():
        data = _target(ctx).post(f"/v1/licenses/{_q(license)}/{action}", body)
        _show(data, as_json, LICENSE_COLS, f"license {action}")


@licenses.command("revoke")
def licenses_revoke(ctx: typer.Context, license: str, as_json: Json = False) -> None:
    """Revoke for good; devices lock at their next heartbeat.

    Example: modelseal admin licenses revoke 7KQ2M-0XD9T-A0RW4-PHC6N-BZE3A
    """
    _action(ctx, license, "revoke", as_json)


@licenses.command("suspend")
def licenses_suspend(ctx: typer.Context, license: str, as_json: Json = False) -> None:
    """Suspend; devices lock at their next heartbeat until reinstated.

    Example: modelseal admin licenses suspend lic_...
    """
    _action(ctx, license, "suspend", as_json)


@licenses.command("reinstate")
def licenses_reinstate(ctx: typer.Context, license: str, as_json: Json = False) -> None:
    """Lift a suspension.

    Example: modelseal admin licenses reinstate lic_...
    """
    _action(ctx, license, "reinstate", as_json)


@licenses.command("renew")
def licenses_renew(
    ctx: typer.Context,
    license: str,
    days: Annotated[int, typer.Option(min=1, help="extend by this many days")],
    as_json: Json = False,
) -> None:
    """Extend the expiry; devices get the renewed license with their next heartbeat.

    Example: modelseal admin licenses renew lic_... --days 365
    """
    _action(ctx, license, "renew", as_json, {"days": days})


@licenses.command("activate-offline")
def licenses_activate_offline(
    ctx: typer.Context,
    license: Annotated[str, typer.Option("--license", help="license id or key")],
    request: Annotated[Path, typer.Option(help="the device's request file")],
    out_path: Annotated[Path, typer.Option("--out", help="where to write the license")],
    force: Annotated[bool, typer.Option(help="overwrite --out")] = False,
    as_json: Json = False,
) -> None:
    """Activate an air-gapped device from its request file.

    Example: modelseal admin licenses activate-offline --license lic_... --request r.json
    --out license.jwt
    """
    with errors_as_exit_codes():
        import json as _json

        from modelseal.device import ActivationRequest

        if out_path.exists() and not force:
            fail(f"{out_path} exists; use --force to overwrite", 2)
        req = ActivationRequest.load(request)
        data = _target(ctx).post(
            f"/v1/licenses/{_q(license)}/activate-offline", {"request": _json.loads(req.to_bytes())}
        )
        out_path.write_text(data["license"] + "\n")
        _report_activation(data, out_path, as_json)


def _report_activation(data: dict[str, Any], path: Path, as_json: bool) -> None:
    if as_json:
        emit_json({k: v for k, v in data.items() if k != "license"} | {"out": str(path)})
        return
    again = " (re-activated on its existing seat)" if data.get("reactivated") else ""
    out.print(f"license {data['license_id']} for device {data['device']}{again} -> {path}")
    for warning in data.get("warnings", []):
        out.print(f"warning: {warning}")


@licenses.command("download")
def licenses_download(
    ctx: typer.Context,
    device: Annotated[str, typer.Option(help="device record id (dev_...)")],
    out_path: Annotated[Path, typer.Option("--out", help="where to write the license")],
    format: Annotated[
        str, typer.Option("--format", help="jwt (the license file) or k8s-secret (a manifest)")
    ] = "jwt",
    namespace: Annotated[
        str | None, typer.Option(help="the Secret's namespace (--format k8s-secret)")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="the Secret's name (default modelseal-license-<id>)")
    ] = None,
) -> None:
    """A device's current license file (it opens only on that device), or a Kubernetes Secret
    holding it plus the pod snippet that mounts it (printed) for ``modelseal serve``.

    Example: modelseal admin licenses download --device dev_... --out license.jwt

    Example: modelseal admin licenses download --device dev_... --format k8s-secret
    --namespace inference --out license-secret.yaml
    """
    from modelseal._fs import write_file

    with errors_as_exit_codes():
        if format not in ("jwt", "k8s-secret"):
            fail(f"--format must be jwt or k8s-secret, not {format!r}", 2)
        if format == "k8s-secret" and not namespace:
            fail("--format k8s-secret needs --namespace NS", 2)
        token = _target(ctx).text(f"/v1/devices/{_q(device)}/license").strip()
        if format == "jwt":
            write_file(out_path, (token + "\n").encode(), mode=0o600, overwrite=True)
            out.print(f"-> {out_path}")
            return
        from modelseal.license import read_unverified
        from modelseal.license.k8s_secret import default_name, mount_snippet, secret_manifest

        claims = read_unverified(token)[1]
        secret_name = name or default_name(str(claims.get("jti", "license")))
        manifest = secret_manifest(
            token,
            name=secret_name,
            namespace=str(namespace),
            labels={
                "app.kubernetes.io/managed-by": "modelseal",
                "modelseal.dev/license": str(claims.get("jti", "")),
            },
        )
        write_file(out_path, manifest.encode(), mode=0o600, overwrite=True)
        out.print(f"Secret {namespace}/{secret_name} -> {out_path}", highlight=False)
        out.print(mount_snippet(secret_name), highlight=False, markup=False)


@licenses.command("export-revocations")
def licenses_export_revocations(
    ctx: typer.Context,
    out_path: Annotated[Path, typer.Option("--out", help="file for the signed list")],
    days: Annotated[int, typer.Option(min=1, max=365, help="valid for (next update)")] = 7,
) -> None:
    """Signed revocation list for air-gapped sites (the Guard imports it from a file).

    Example: modelseal admin licenses export-revocations --out revocations.jwt
    """
    with errors_as_exit_codes():
        out_path.write_text(_target(ctx).text(f"/v1/revocations?days={days}").strip() + "\n")
        out.print(f"-> {out_path}")


# --- devices -----------------------------------------------------------------------------------


@devices.command("list")
def devices_list(
    ctx: typer.Context,
    license: Annotated[str | None, typer.Option(help="only this license's")] = None,
    as_json: Json = False,
) -> None:
    """Example: modelseal admin devices list --license lic_..."""
    with errors_as_exit_codes():
        path = f"/v1/licenses/{_q(license)}/devices" if license else "/v1/devices"
        _show(_target(ctx).get(path), as_json, DEVICE_COLS, "devices")


@devices.command("deactivate")
def devices_deactivate(ctx: typer.Context, device: str, as_json: Json = False) -> None:
    """Free a device's seat; it locks at its next heartbeat.

    Example: modelseal admin devices deactivate dev_...
    """
    with errors_as_exit_codes():
        data = _target(ctx).post(f"/v1/devices/{_q(device)}/deactivate")
        _show(data, as_json, DEVICE_COLS, "device deactivated")


@devices.command("show")
def devices_show(ctx: typer.Context, device: str, as_json: Json = False) -> None:
    """One device by record id (dev_...) or device id, with its flag if the server set one.

    Example: modelseal admin devices show dev_...
    """
    with errors_as_exit_codes():
        data = _target(ctx).get(f"/v1/devices/{_q(device)}")
        _show(data, as_json, [*DEVICE_COLS, "flagged_at"], "device")


def _device_action(ctx: typer.Context, device: str, action: str, title: str, as_json: bool) -> None:
    with errors_as_exit_codes():
        data = _target(ctx).post(f"/v1/devices/{_q(device)}/{action}")
        _show(data, as_json, DEVICE_COLS, title)


@devices.command("suspend")
def devices_suspend(ctx: typer.Context, device: str, as_json: Json = False) -> None:
    """Suspend one device: it keeps its seat and locks at its next heartbeat.

    Example: modelseal admin devices suspend dev_...
    """
    _device_action(ctx, device, "suspend", "device suspended", as_json)


@devices.command("reinstate")
def devices_reinstate(ctx: typer.Context, device: str, as_json: Json = False) -> None:
    """Lift a device's suspension; its next heartbeat unlocks it.

    Example: modelseal admin devices reinstate dev_...
    """
    _device_action(ctx, device, "reinstate", "device reinstated", as_json)


@devices.command("clear-flag")
def devices_clear_flag(ctx: typer.Context, device: str, as_json: Json = False) -> None:
    """Accept a flagged device again (its audit log went back, e.g. a reinstall).

    Example: modelseal admin devices clear-flag dev_...
    """
    _device_action(ctx, device, "clear-flag", "device flag cleared", as_json)


# --- keys and tokens -----------------------------------------------------------------------------


@keys.command("list")
def keys_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Example: modelseal admin keys list"""
    with errors_as_exit_codes():
        _show(_target(ctx).get("/v1/keys"), as_json, ["kid", "kty", "alg", "active"], "keys")


@keys.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    alg: Annotated[str | None, typer.Option(help="ed25519, rsa or sm2 (default: as now)")] = None,
    hsm: Annotated[
        bool, typer.Option("--hsm", help="make the key in the server's PKCS#11 token")
    ] = False,
    as_json: Json = False,
) -> None:
    """A new key signs from now on; old keys stay in the trust set.

    Example: modelseal admin keys rotate --alg sm2

    Example: modelseal admin keys rotate --alg ed25519 --hsm
    """
    with errors_as_exit_codes():
        query = [f"kty={_q(alg)}"] if alg else []
        if hsm:
            query.append("store=hsm")
        data = _target(ctx).post("/v1/keys/rotate" + ("?" + "&".join(query) if query else ""))
        _show(data, as_json, ["kid", "kty", "alg", "active"], "new signing key")


@keys.command("export-trust")
def keys_export_trust(
    ctx: typer.Context,
    out_path: Annotated[
        Path, typer.Option("--out", help="vendor.json (trust file) or vendor.pub (one key)")
    ],
) -> None:
    """The vendor's public keys for ``Guard(..., trust)`` and ``license verify --trust``.

    A ``.json`` file is a trust file: every key (rotation), each pinned to the
    vendor. Any other name gets a PEM public key, which holds one key only.

    Example: modelseal admin keys export-trust --out vendor.json
    """
    with errors_as_exit_codes():
        target = _target(ctx)
        if out_path.suffix == ".json":
            out_path.write_text(target.text("/v1/keys/trust?format=json") + "\n")
        else:
            pem = target.text("/v1/keys/trust?format=pem")
            count = pem.count("BEGIN PUBLIC KEY")
            if count != 1:
                fail(f"the vendor has {count} keys; a PEM file holds one: use --out NAME.json", 2)
            out_path.write_text(pem)
        out.print(f"-> {out_path}")


@tokens.command("create")
def tokens_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="what the token is for")],
    role: Annotated[str, typer.Option(help="owner, issuer or auditor")] = "issuer",
    out_path: Annotated[Path, typer.Option("--out", help="file for the token (0600)")] = Path(
        "token"
    ),
) -> None:
    """The token goes to --out (0600) only.

    Example: modelseal admin tokens create --name ci --role auditor --out ci.token
    """
    with errors_as_exit_codes():
        if out_path.exists():
            fail(f"{out_path} exists; refusing to overwrite a token file", 2)
        data = _target(ctx).post("/v1/tokens", {"name": name, "role": role})
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(data["token"] + "\n")
        out.print(f"token {data['id']} ({role}) -> {out_path}")


@tokens.command("list")
def tokens_list(ctx: typer.Context, as_json: Json = False) -> None:
    """API tokens of the vendor (never the tokens themselves).

    Example: modelseal admin tokens list --json
    """
    with errors_as_exit_codes():
        _show(
            _target(ctx).get("/v1/tokens"), as_json, ["id", "name", "role", "revoked_at"], "tokens"
        )


@tokens.command("revoke")
def tokens_revoke(ctx: typer.Context, token_id: str, as_json: Json = False) -> None:
    """Revoke an API token at once.

    Example: modelseal admin tokens revoke tok_...
    """
    with errors_as_exit_codes():
        data = _target(ctx).post(f"/v1/tokens/{_q(token_id)}/revoke")
        _show(data, as_json, ["id", "name", "role", "revoked_at"], "token revoked")
