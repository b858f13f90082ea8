"""``modelseal gateway``: the decrypting reverse proxy, and its API keys (docs/gateway.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from modelseal.cli._common import emit_json, errors_as_exit_codes, fail, out

app = typer.Typer(
    help="Route users' requests to model services and decrypt their answers.",
    invoke_without_command=True,
)
keys_app = typer.Typer(help="API keys for the routes file.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.callback()
def gateway(
    ctx: typer.Context,
    routes: Annotated[Path | None, typer.Option(help="routes.yaml (version 1)")] = None,
    envelope_private_key: Annotated[
        Path | None, typer.Option(help="the gateway's SM2 private key (PKCS#8 PEM)")
    ] = None,
    passphrase_env: Annotated[
        str | None, typer.Option(help="environment variable holding the key's passphrase")
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="worker processes (SO_REUSEPORT)")] = 1,
    redis_url: Annotated[
        str | None, typer.Option(help="share rate limits in Redis, e.g. redis://127.0.0.1:6379/0")
    ] = None,
    access_log: Annotated[bool, typer.Option(help="one JSON line per request on stderr")] = True,
    idle_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=3600,
            help="seconds before closing an idle connection or one slow to send its headers",
        ),
    ] = 30.0,
    controlplane: Annotated[
        str | None,
        typer.Option(help="follow this control plane's routes and API keys instead of --routes"),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="MODELSEAL_TOKEN_FILE", help="API token for --controlplane (issuer for the key)"
        ),
    ] = None,
    controlplane_key: Annotated[
        bool,
        typer.Option(help="take the SM2 private key from the control plane (kept in memory)"),
    ] = False,
    poll_interval: Annotated[
        float, typer.Option(min=0.1, max=300, help="seconds between control plane polls")
    ] = 2.0,
) -> None:
    """Run the gateway. SIGHUP (or editing the routes file) reloads routes and keys; with
    --controlplane it follows the control plane's routes and keys without a restart.

    Example: modelseal gateway --routes routes.yaml --envelope-private-key gateway-sm2.pem

    Example: modelseal gateway --controlplane http://127.0.0.1:8400 --token-file gw.token
    --controlplane-key
    """
    if ctx.invoked_subcommand is not None:
        return
    if (routes is None) == (controlplane is None):
        fail("give exactly one of --routes FILE and --controlplane URL", 2)
    token = None
    if controlplane is not None:
        if token_file is None:
            fail("--controlplane needs --token-file (or MODELSEAL_TOKEN_FILE)", 2)
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read the token file {token_file}: {exc.strerror}", 3)
    if controlplane_key and envelope_private_key is not None:
        fail("give --envelope-private-key or --controlplane-key, not both", 2)
    if controlplane_key and controlplane is None:
        fail("--controlplane-key needs --controlplane", 2)
    from modelseal.gateway.server import GatewayOptions, run

    passphrase = None
    if passphrase_env:
        passphrase = os.environ.get(passphrase_env)
        if passphrase is None:
            fail(f"environment variable {passphrase_env} is not set", 2)
    with errors_as_exit_codes():
        run(
            GatewayOptions(
                routes=str(routes) if routes is not None else None,
                private_key=str(envelope_private_key) if envelope_private_key else None,
                host=host,
                port=port,
                workers=workers,
                redis_url=redis_url,
                access_log=access_log,
                passphrase=passphrase,
                idle_timeout=idle_timeout,
                controlplane=controlplane,
                controlplane_token=token,
                controlplane_key=controlplane_key,
                poll_interval=poll_interval,
            )
        )


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="who the key is for (shown in the access log)")],
    routes: Annotated[str, typer.Option(help="comma-separated route ids, or *")],
    rate_limit: Annotated[str | None, typer.Option(help="e.g. 50/s, 600/min, 1000/h")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Make a new API key: printed once; only its hash goes into the routes file.

    Example: modelseal gateway keys create --name alice --routes demo --rate-limit 50/s
    """
    import yaml

    from modelseal.gateway import Rate, RoutesFileError, check_key_name, new_api_key

    try:
        check_key_name(name)
    except RoutesFileError as exc:
        fail(f"--name: {exc}", 2)
    ids = [r.strip() for r in routes.split(",") if r.strip()]
    if not ids:
        fail("--routes needs at least one route id", 2)
    if rate_limit is not None:
        try:
            Rate.parse(rate_limit)
        except ValueError as exc:
            fail(f"--rate-limit {exc}", 2)
    with errors_as_exit_codes():
        key, digest = new_api_key()
        entry: dict[str, object] = {"name": name, "sha256": digest, "routes": ids}
        if rate_limit is not None:
            entry["rate_limit"] = rate_limit
        if as_json:
            emit_json({"ok": True, "key": key, "entry": entry})
            return
        out.print(
            f"API key for {name} (shown once; give it to the user):\n{key}\n", highlight=False
        )
        out.print("Add under api_keys: in the routes file:", highlight=False)
        out.print(
            yaml.safe_dump([entry], sort_keys=False).rstrip(), highlight=False, soft_wrap=True
        )
