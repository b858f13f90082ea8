"""``modelseal guard``: the device side of a license (status, emergency unlock)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from modelseal.cli._common import emit_json, errors_as_exit_codes, fail, out

app = typer.Typer(help="Check a license on this device; apply unlock codes.", no_args_is_help=True)

LicenseOpt = Annotated[Path, typer.Option("--license", help="license.jwt")]
TrustOpt = Annotated[list[Path], typer.Option(help="vendor public key file or directory")]
StateOpt = Annotated[Path | None, typer.Option(help="state directory (MODELSEAL_STATE_DIR)")]


@app.command("status")
def status(
    license: LicenseOpt,
    trust: TrustOpt,
    state_dir: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Verify the license on this device and show usage. Exit 0 when licensed.

    Example: modelseal guard status --license license.jwt --trust vendor.pub
    """
    from modelseal.guard import ANY_PRODUCT, Guard, NotLicensedError

    with errors_as_exit_codes():
        try:
            guard = Guard(license, trust, state_dir=state_dir, audience=ANY_PRODUCT)
        except NotLicensedError as exc:
            if as_json:
                emit_json({"licensed": False, "reason": exc.reason})
                raise typer.Exit(exc.exit_code) from None
            fail(f"not licensed ({exc.reason}); details in the audit log", exc.exit_code)
        claims = guard.license.claims
        used = guard.usage()
        info = {
            "licensed": True,
            "license_id": claims.jti,
            "customer": claims.sub,
            "models": list(claims.aud),
            "features": list(claims.entitlements),
            "calls_used": used,
            "calls_limit": claims.limits.calls,
            "expires": datetime.fromtimestamp(claims.exp, UTC).isoformat() if claims.exp else None,
            "audit_log": str(guard.audit_path),
        }
        if as_json:
            emit_json(info)
            return
        out.print(
            f"[green]licensed[/] {claims.jti} for {claims.sub}; features "
            f"{', '.join(claims.entitlements) or '-'}; calls {used}"
            f"{'/' + str(claims.limits.calls) if claims.limits.calls else ''}; "
            f"expires {info['expires'] or 'never'}"
        )


@app.command("unlock")
def unlock(
    code: Annotated[str, typer.Argument(help="the code the vendor read out")],
    license: LicenseOpt,
    trust: TrustOpt,
    state_dir: StateOpt = None,
) -> None:
    """Apply a vendor-issued emergency unlock code (single use, always audited).

    Example: modelseal guard unlock 7K3M-Q9TX-... --license license.jwt --trust vendor.pub
    """
    from modelseal.guard import ANY_PRODUCT, Guard

    with errors_as_exit_codes():
        guard = Guard(license, trust, state_dir=state_dir, audience=ANY_PRODUCT, verify=False)
        until = guard.unlock(code)
        out.print(
            f"[green]unlocked[/] until {until:%Y-%m-%d %H:%M} UTC (recorded in the audit log)"
        )
