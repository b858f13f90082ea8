"""``modelseal device release``: free a device's seat with the license key (self-service).

For replacing a machine without the vendor: release the old device (by the
device id its license names, or the server's ``dev_...`` record), then
activate the new one. The plan limits how often (docs/controlplane.md,
"Device replacement"); beyond it the server refuses with
``TOO_MANY_REPLACEMENTS`` (exit 25).
"""

from __future__ import annotations

from typing import Annotated

import typer

from modelseal.cli._common import emit_json, errors_as_exit_codes, fail, out


def release(
    key: Annotated[str, typer.Option("--key", help="the license key")],
    device: Annotated[str, typer.Option("--device", help="the device id to release")],
    server: Annotated[
        str | None, typer.Option(envvar="MODELSEAL_SERVER", help="license server URL")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Release a device of this license so that another can be activated.

    Example: modelseal device release --server https://lic.acme.example --key 7KQ2M-...
    --device 3hX9...
    """
    with errors_as_exit_codes():
        from modelseal._http import call_json
        from modelseal.license.licensekey import normalize_license_key

        if not server:
            fail("no server: give --server URL or set MODELSEAL_SERVER", 2)
        data = call_json(
            "POST",
            server.rstrip("/") + "/v1/release",
            json_body={"license_key": normalize_license_key(key), "device": device},
        )
        if as_json:
            emit_json(data)
            return
        allowed = data["replacements_allowed"]
        limit = "no limit" if allowed is None else f"{allowed} per {data['period_days']} days"
        out.print(
            f"device {data['device_id']} released from {data['license_id']}"
            f" ({data['replacements_used']} replacements used; {limit})",
            highlight=False,
        )
