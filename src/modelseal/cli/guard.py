"""``modelseal guard``: the device side of a license (status, emergency unlock)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from modelseal.cli._common import (
    JsonOpt,
    emit_json,
    errors_as_exit_codes,
    exit_code_for,
    fail,
    out,
    read_text_input,
    trust_paths,
)
from modelseal.errors import InvalidArgumentError
from modelseal.license.errors import LicenseFormatError

if TYPE_CHECKING:
    from modelseal.guard import Guard

app = typer.Typer(
    help="Check a license on this device; apply unlock codes and revocation lists.",
    no_args_is_help=True,
)

LicenseOpt = Annotated[
    Path | None,
    typer.Option(
        "--license",
        envvar="MODELSEAL_LICENSE",
        help="license.jwt (default: $MODELSEAL_LICENSE)",
        show_envvar=False,
    ),
]
TrustOpt = Annotated[
    list[Path] | None,
    typer.Option(
        help="vendor public key file, directory or trust file; ISSUER=FILE pins the issuer "
        "(repeat; default: $MODELSEAL_TRUST, ':'-separated)"
    ),
]
StateOpt = Annotated[
    Path | None,
    typer.Option(
        help="state directory (default: $MODELSEAL_STATE_DIR, else "
        "$XDG_STATE_HOME/modelseal or ~/.local/state/modelseal)"
    ),
]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _guard(
    license: Path | None, trust: list[Path] | None, state_dir: Path | None, *, verify: bool
) -> Guard:
    """A Guard built as ``Guard.from_env`` would be, for any product the license names.

    The device-side commands check the license itself, not one product's
    use of it, so the audience is ``ANY_PRODUCT``.
    """
    from modelseal.guard import ANY_PRODUCT, Guard

    if license is None:
        raise InvalidArgumentError("give --license or set MODELSEAL_LICENSE")
    # a missing file is exit 3 and a binary one a malformed license (10), as
    # for `license verify`; the Guard alone reports both as "unreadable"
    read_text_input(license, what="license", error=LicenseFormatError)
    return Guard(
        license, trust_paths(trust), state_dir=state_dir, audience=ANY_PRODUCT, verify=verify
    )


def _state_info(guard: Guard) -> dict[str, Any]:
    state = guard.state()
    head = state.audit_head if state is not None else None
    return {
        "state_dir": str(guard.audit_path.parent),
        "audit_log": str(guard.audit_path),
        "audit_head": f"{head[0]}:{head[1]}" if head else None,
        "trusted_time": _iso(state.trusted if state else None),
        "clock_high_water": _iso(state.high_water if state else None),
        "unlocked_until": _iso(state.unlock_until if state else None),
        # server-side quotas: how far the leases reach, and whether the server said
        # the quota is used up (the offline allowance is then withdrawn)
        "lease_end": state.lease_end if state else 0,
        "lease_expires": _iso(state.lease_exp if state else None),
        "quota_blocked": state.quota_blocked if state else False,
        "revocations_issued_at": _iso(state.revocations_iat if state else None),
    }


@app.command("status")
def status(
    license: LicenseOpt = None,
    trust: TrustOpt = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify the license on this device and show usage, state and audit log.

    Exit 0 when licensed; otherwise the code of the refusal's class (13
    expired, 15 wrong device, 16 over quota, 17 clock or state...: docs/cli.md).

    Example: modelseal guard status --license license.jwt --trust vendor.pub
    """
    from modelseal.guard import NotLicensedError

    with errors_as_exit_codes():
        guard = _guard(license, trust, state_dir, verify=False)
        try:
            guard.verify()
        except NotLicensedError as exc:
            fail(
                f"not licensed ({exc.reason}); the audit log {guard.audit_path} has the details",
                exit_code_for(exc),
                reason=exc.reason,
                licensed=False,
                audit_log=str(guard.audit_path),
            )
        claims = guard.license.claims
        used = guard.usage()
        info = {
            "ok": True,
            "licensed": True,
            "license_id": claims.jti,
            "customer": claims.sub,
            "models": list(claims.aud),
            "features": list(claims.entitlements),
            "calls_used": used,
            "calls_limit": claims.limits.calls,
            "offline_calls": claims.limits.offline_calls,
            "expires": _iso(claims.exp),
            **_state_info(guard),
        }
        if as_json:
            emit_json(info)
            return
        limit = f"/{claims.limits.calls}" if claims.limits.calls else " (unlimited)"
        out.print(
            f"[green]licensed[/] {claims.jti} for {escape(claims.sub)}; features "
            f"{escape(', '.join(claims.entitlements) or '-')}; calls {used}{limit}; "
            f"expires {info['expires'] or 'never'}"
        )
        out.print(f"  state:        {escape(str(info['state_dir']))}")
        out.print(f"  audit log:    {escape(str(info['audit_log']))} (head {info['audit_head']})")
        out.print(
            f"  trusted time: {info['trusted_time']} (clock high-water mark "
            f"{info['clock_high_water']})"
        )
        if claims.limits.offline_calls is not None:
            out.print(
                f"  leases:       calls up to {info['lease_end']} (until "
                f"{info['lease_expires'] or '-'}) + offline allowance "
                f"{0 if info['quota_blocked'] else claims.limits.offline_calls}"
            )
        if info["unlocked_until"]:
            out.print(f"  unlocked until {info['unlocked_until']}")


@app.command("unlock")
def unlock(
    code: Annotated[
        str, typer.Argument(help="the code the vendor read out, e.g. 0KJ4M-7Q2XH-9TCVB-A31PD-6EWRN")
    ],
    license: LicenseOpt = None,
    trust: TrustOpt = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply a vendor-issued emergency unlock code (single use, always audited).

    Codes are 25 characters in groups of five (dashes and case do not
    matter; O/0 and I/L/1 are read alike).

    Example: modelseal guard unlock 0KJ4M-7Q2XH-9TCVB-A31PD-6EWRN --license license.jwt
    --trust vendor.pub
    """
    with errors_as_exit_codes():
        guard = _guard(license, trust, state_dir, verify=False)
        until = guard.unlock(code)
        if as_json:
            emit_json({"ok": True, "unlocked_until": until.isoformat(), **_state_info(guard)})
            return
        out.print(
            f"[green]unlocked[/] until {until:%Y-%m-%d %H:%M} UTC (recorded in the audit log "
            f"{escape(str(guard.audit_path))})"
        )


@app.command("import-revocations")
def import_revocations(
    file: Annotated[Path, typer.Argument(help="the signed revocation list (GET /v1/revocations)")],
    license: LicenseOpt = None,
    trust: TrustOpt = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a vendor-signed revocation list on a device no heartbeat reaches.

    The list must be signed by a trusted key of the license's issuer and be
    no older than the last list imported here (exit 4 otherwise). If it
    revokes this license or device, the Guard refuses from now on, for good.
    Exit 0 when the list was imported (whether or not it revokes this device).

    Example: modelseal guard import-revocations revocations.jwt --license license.jwt
    --trust vendor.pub
    """
    from modelseal.guard import NotLicensedError
    from modelseal.license.heartbeat import HeartbeatReplyError

    with errors_as_exit_codes():
        token = read_text_input(file, what="revocation list", error=HeartbeatReplyError).strip()
        if token.count(".") != 2 or any(c.isspace() for c in token):
            raise HeartbeatReplyError(f"{file} is not a signed revocation list (a compact JWS)")
        guard = _guard(license, trust, state_dir, verify=False)
        # a refusing Guard (expired, offline too long) still takes a revocation;
        # one whose license did not even verify says so in import_revocations
        with contextlib.suppress(NotLicensedError):
            guard.verify()
        revoked = guard.import_revocations(token)
        state = guard.state()
        issued = state.revocations_iat if state is not None else None
        info = {
            "ok": True,
            "revoked": revoked,
            "license_id": guard.license.claims.jti,
            "issued_at": _iso(issued),
            **_state_info(guard),
        }
        if as_json:
            emit_json(info)
            return
        if revoked:
            out.print(
                f"[red]revoked[/]: the list (issued {info['issued_at']}) revokes "
                f"{info['license_id']} on this device; the Guard refuses from now on"
            )
        else:
            out.print(
                f"imported the revocation list issued {info['issued_at']}: "
                f"{info['license_id']} is not revoked"
            )


__all__ = ["app", "import_revocations", "status", "unlock"]
