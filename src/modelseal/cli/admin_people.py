"""``modelseal admin users|audit`` and ``admin licenses unlock-code`` (docs/controlplane.md).

Registered on :mod:`modelseal.cli.admin`'s app; the same ``--server`` and
``--token-file``. Unlock codes need a *personal* token (a user's, made at
``POST /v1/session/tokens``) and that user's current TOTP code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from modelseal._http import call
from modelseal.cli._common import emit_json, errors_as_exit_codes, fail, out
from modelseal.cli._server import Json
from modelseal.cli.admin import _q, _show, _target, app, licenses

users = typer.Typer(
    help="People of the vendor: users with roles (owner only).", no_args_is_help=True
)
audit = typer.Typer(help="The server's hash-chained audit log.", no_args_is_help=True)
app.add_typer(users, name="users")
app.add_typer(audit, name="audit")

USER_COLS = ["id", "username", "role", "totp_enabled", "locked_until", "disabled_at"]


@users.command("create")
def users_create(
    ctx: typer.Context,
    username: Annotated[str, typer.Option(help="the login name")],
    role: Annotated[str, typer.Option(help="owner, issuer or auditor")] = "issuer",
    as_json: Json = False,
) -> None:
    """A new user; the generated password is printed once (they enrol TOTP at first login).

    Example: modelseal admin users create --username alice --role issuer
    """
    with errors_as_exit_codes():
        data = _target(ctx).post("/v1/users", {"username": username, "role": role})
        if as_json:
            emit_json(data)
            return
        out.print(f"user {data['id']} {username!r} ({role})")
        out.print(f"password (shown once): {data['password']}", highlight=False, soft_wrap=True)


@users.command("list")
def users_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Users of the vendor (never their secrets).

    Example: modelseal admin users list --json
    """
    with errors_as_exit_codes():
        _show(_target(ctx).get("/v1/users"), as_json, USER_COLS, "users")


@users.command("disable")
def users_disable(ctx: typer.Context, user: str, as_json: Json = False) -> None:
    """Disable a user: their sessions and personal tokens stop at once.

    Example: modelseal admin users disable alice
    """
    with errors_as_exit_codes():
        _show(_target(ctx).post(f"/v1/users/{_q(user)}/disable"), as_json, USER_COLS, "disabled")


@users.command("role")
def users_role(
    ctx: typer.Context,
    user: str,
    role: Annotated[str, typer.Option(help="owner, issuer or auditor")],
    as_json: Json = False,
) -> None:
    """Change a user's role (their personal tokens follow).

    Example: modelseal admin users role alice --role auditor
    """
    with errors_as_exit_codes():
        data = _target(ctx).post(f"/v1/users/{_q(user)}/role", {"role": role})
        _show(data, as_json, USER_COLS, "role changed")


@users.command("reset-mfa")
def users_reset_mfa(ctx: typer.Context, user: str, as_json: Json = False) -> None:
    """Turn a user's TOTP off (lost authenticator and recovery codes); they enrol again.

    Example: modelseal admin users reset-mfa alice
    """
    with errors_as_exit_codes():
        data = _target(ctx).post(f"/v1/users/{_q(user)}/reset-mfa")
        _show(data, as_json, USER_COLS, "TOTP reset")


# --- audit ---------------------------------------------------------------------------------


def _who(data: dict[str, Any]) -> str:
    actor = data.get("actor") or {}
    parts = [str(actor.get("kind", "?"))]
    for key in ("user", "token", "username"):
        if actor.get(key):
            parts.append(str(actor[key]))
    return " ".join(parts)


@audit.command("list")
def audit_list(
    ctx: typer.Context,
    after: Annotated[int | None, typer.Option(help="records with seq above this")] = None,
    event: Annotated[str | None, typer.Option(help="event name prefix, e.g. license.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Json = False,
) -> None:
    """Records of the audit log, oldest first.

    Example: modelseal admin audit list --event unlock. --json
    """
    with errors_as_exit_codes():
        query: dict[str, Any] = {"limit": limit}
        if after is not None:
            query["after"] = after
        if event:
            query["event"] = event
        rows = _target(ctx).get("/v1/audit?" + urlencode(query))
        if as_json:
            emit_json(rows)
            return
        table = [
            {
                "seq": r["seq"],
                "ts": r["ts"],
                "event": r["event"],
                "who": _who(r["data"]),
                "from": r["data"].get("address"),
                "target": (r["data"].get("target") or {}).get("id"),
                "reason": r["reason"],
            }
            for r in rows
        ]
        _show(table, False, ["seq", "ts", "event", "who", "from", "target", "reason"], "audit")


@audit.command("verify")
def audit_verify(ctx: typer.Context, as_json: Json = False) -> None:
    """Check the chain end to end on the server; exit 4 at the first record that does not fit.

    Example: modelseal admin audit verify
    """
    with errors_as_exit_codes():
        data = _target(ctx).get("/v1/audit/verify")
        if as_json:
            emit_json(data)
        if not data["ok"]:
            problem = data["problem"] or {}
            fail(
                f"the audit chain is broken at record {problem.get('seq')}"
                f" ({problem.get('kind')}); {data['records']} records before it verify",
                4,
                problem=problem,
            )
        if not as_json:
            head = data["head"]
            where = f", head {head[0]} {head[1]}" if head else ""
            out.print(f"audit chain ok: {data['records']} records{where}", highlight=False)


@audit.command("export")
def audit_export(
    ctx: typer.Context,
    out_path: Annotated[Path, typer.Option("--out", help="file for the JSON lines")],
    force: Annotated[bool, typer.Option("--force", help="overwrite --out")] = False,
) -> None:
    """Every record as JSON lines (the device audit log's format).

    Example: modelseal admin audit export --out audit.jsonl
    """
    with errors_as_exit_codes():
        target = _target(ctx)
        _download(target.url("/v1/audit/export"), target.token, out_path, force)
        with out_path.open("rb") as fh:
            records = sum(1 for _ in fh)
        out.print(f"{records} records -> {out_path}")


# --- emergency unlock ----------------------------------------------------------------------


@licenses.command("unlock-code")
def licenses_unlock_code(
    ctx: typer.Context,
    license: Annotated[str, typer.Option("--license", help="license id or key")],
    device: Annotated[str, typer.Option("--device", help="device record id or device id")],
    reason: Annotated[str, typer.Option("--reason", help="why (goes into the audit log)")],
    totp: Annotated[str, typer.Option("--totp", help="your current TOTP code")],
    as_json: Json = False,
) -> None:
    """Issue a device's next emergency unlock code (needs your personal token and TOTP).

    Example: modelseal admin licenses unlock-code --license lic_... --device dev_...
    --reason "clock reset after BIOS update, ticket 4711" --totp 123456
    """
    with errors_as_exit_codes():
        if not (totp.isdigit() and len(totp) == 6):
            fail("--totp must be the 6 digits your authenticator shows", 2)
        data = _target(ctx).post(
            f"/v1/devices/{_q(device)}/unlock-code",
            {"license": license, "reason": reason, "totp": totp},
        )
        if as_json:
            emit_json(data)
            return
        out.print(f"unlock code #{data['serial']} for device {data['device_id']}:")
        out.print(data["code"], highlight=False)
        out.print(
            f"grants {data['grant_hours']} h once; {data['remaining']} codes left for this device"
        )


# --- reports -----------------------------------------------------------------------------------


@app.command("report")
def report(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="licenses, activations, usage, expiring or refusals")],
    since: Annotated[
        str | None,
        typer.Option(help="only what was created (refusals: happened) since (ISO date or time)"),
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=3650, help="expiring: the horizon")] = 30,
    format: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    out_path: Annotated[
        Path | None, typer.Option("--out", help="write here (default: standard output)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite --out")] = False,
) -> None:
    """A report as CSV or JSON, streamed by the server.

    Example: modelseal admin report usage --format csv --out usage.csv

    Example: modelseal admin report refusals --since 2026-12-01 --format json
    """
    import sys

    with errors_as_exit_codes():
        kinds = ("licenses", "activations", "usage", "expiring", "refusals")
        if kind not in kinds:
            fail(f"unknown report {kind!r}: choose {', '.join(kinds)}", 2)
        if format not in ("csv", "json"):
            fail("--format must be csv or json", 2)
        query: dict[str, Any] = {"format": format, "days": days}
        if since:
            query["since"] = since
        target = _target(ctx)
        url = target.url(f"/v1/reports/{kind}?" + urlencode(query))
        if out_path is None:
            call("GET", url, token=target.token, timeout=600, sink=sys.stdout.buffer.write)
            sys.stdout.flush()
            return
        _download(url, target.token, out_path, force)
        out.print(f"{kind} report -> {out_path}")


def _download(url: str, token: str, out_path: Path, force: bool) -> int:
    """Stream a body of any size into ``out_path``: a temporary file beside it, published
    whole (never a half-written report)."""
    import os

    from modelseal._fs import check_output, publish, temp_beside

    check_output(out_path, overwrite=force)
    fd, tmp = temp_beside(out_path, mode=0o600)
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:

            def sink(chunk: bytes) -> None:
                nonlocal size
                fh.write(chunk)
                size += len(chunk)

            call("GET", url, token=token, timeout=600, sink=sink)
            fh.flush()
            os.fsync(fh.fileno())
        publish(tmp, out_path, overwrite=force)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size
