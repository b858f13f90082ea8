"""``modelseal device activate``: get this device's license from a license server.

Online: the request (made here, salted with the license key so a reinstall
is recognised) goes to the server with the key, and the device-bound
license comes back. Offline (air-gapped): ``--request-out`` writes the
request file for the vendor's ``admin licenses activate-offline``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from modelseal.cli._common import emit_json, errors_as_exit_codes, fail, out


def activate(
    key: Annotated[str, typer.Option("--key", help="the license key, e.g. 7KQ2M-XD9TA-...")],
    server: Annotated[
        str | None, typer.Option(envvar="MODELSEAL_SERVER", help="license server URL")
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="where to write the license")
    ] = None,
    request_out: Annotated[
        Path | None,
        typer.Option("--request-out", help="offline: write the request file here instead"),
    ] = None,
    label: Annotated[str | None, typer.Option(help="a name for this device")] = None,
    force: Annotated[bool, typer.Option(help="overwrite the output file")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Activate this device with a license key.

    Example: modelseal device activate --server https://lic.acme.example --key 7KQ2M-...
    --out license.jwt
    """
    with errors_as_exit_codes():
        from modelseal._http import call_json
        from modelseal.device import collect, make_request
        from modelseal.license.licensekey import activation_salt, normalize_license_key

        canonical = normalize_license_key(key)
        target = request_out if request_out is not None else out_path
        if target is None:
            fail("give --out license.jwt (online) or --request-out request.json (offline)", 2)
        if request_out is None and not server:
            fail("no server: give --server URL or set MODELSEAL_SERVER", 2)
        if target.exists() and not force:
            fail(f"{target} exists; use --force to overwrite", 2)
        request = make_request(
            collect(),
            label=label or socket.gethostname() or "device",
            salt=activation_salt(canonical),
        )
        if request_out is not None:
            if force:
                request_out.unlink(missing_ok=True)
            request.save(request_out)
            out.print(f"request for license key {canonical[:5]}-... -> {request_out} (0600)")
            return
        assert server is not None
        assert out_path is not None
        import json

        data = call_json(
            "POST",
            server.rstrip("/") + "/v1/activate",
            json_body={"license_key": canonical, "request": json.loads(request.to_bytes())},
            timeout=60,
        )
        tmp = out_path.with_name(out_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(data["license"] + "\n")
        tmp.replace(out_path)
        if as_json:
            emit_json({k: v for k, v in data.items() if k != "license"} | {"out": str(out_path)})
            return
        again = " (this device already held a seat)" if data.get("reactivated") else ""
        out.print(f"activated license {data['license_id']}{again} -> {out_path}")
