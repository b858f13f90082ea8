"""``modelseal license``: issue, inspect and verify licenses offline; unlock codes."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from modelseal.cli._common import emit_json, errors_as_exit_codes, fail, out
from modelseal.crypto import ContentKey, load_private_key

app = typer.Typer(help="Issue, inspect and verify licenses.", no_args_is_help=True)

_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``72h``, ``3d``, ``90m``, ``3600`` (seconds)."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        fail(f"cannot read duration {text!r} (use e.g. 72h, 3d, 90m)", 2)
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"cannot read time {text!r} (use ISO 8601, e.g. 2027-01-01T00:00:00Z)", 2)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _csv(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@app.command("issue")
def issue(
    signing_key: Annotated[Path, typer.Option(help="vendor private key (PKCS#8 PEM)")],
    customer: Annotated[str, typer.Option(help="customer the license is for (sub)")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="license file to write")],
    request: Annotated[Path | None, typer.Option(help="device activation request (JSON)")] = None,
    model: Annotated[
        list[Path] | None, typer.Option(help="sealed model to license (repeat)")
    ] = None,
    content_key: Annotated[
        list[Path] | None, typer.Option(help="content key of a --model (repeat; matched by key id)")
    ] = None,
    product: Annotated[list[str] | None, typer.Option(help="extra audience ids (repeat)")] = None,
    issuer: Annotated[str, typer.Option(help="issuer name (iss)")] = "modelseal-vendor",
    days: Annotated[int, typer.Option(help="validity in days")] = 365,
    not_before: Annotated[str | None, typer.Option(help="start, ISO 8601 (default now)")] = None,
    plan: Annotated[str, typer.Option(help="trial, subscription or perpetual")] = "subscription",
    features: Annotated[
        list[str] | None, typer.Option(help="entitlements, comma-separated")
    ] = None,
    max_calls: Annotated[int | None, typer.Option(help="call limit")] = None,
    max_devices: Annotated[int | None, typer.Option(help="device limit (control plane)")] = None,
    grace: Annotated[str | None, typer.Option(help="offline grace, e.g. 72h")] = None,
    heartbeat_url: Annotated[str | None, typer.Option(help="heartbeat endpoint")] = None,
    heartbeat_interval: Annotated[int, typer.Option(help="seconds between heartbeats")] = 3600,
    threshold: Annotated[
        int | None, typer.Option(help="weight of matching components needed")
    ] = None,
    strict_binding: Annotated[
        bool, typer.Option(help="refuse if weak components alone meet the threshold")
    ] = False,
    allow_vm: Annotated[bool, typer.Option(help="allow virtual machines")] = True,
    allow_container: Annotated[bool, typer.Option(help="allow containers")] = True,
    unlock_codes: Annotated[
        int, typer.Option(help="one-time emergency unlock codes in the license (0: none)")
    ] = 8,
    unlock_hours: Annotated[
        int, typer.Option(help="hours of grace each unlock code grants (1-720)")
    ] = 24,
    alg: Annotated[
        str | None, typer.Option(help="EdDSA, RS256, PS256 or SM2 (default: key's)")
    ] = None,
    passphrase_env: Annotated[
        str | None, typer.Option(help="env var with the key passphrase")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Sign a license for a device and deliver the models' keys to it, offline.

    Example: modelseal license issue --signing-key vendor.pem --request request.json
    --customer ACME --model model.mseal --content-key model.key --days 365
    --features ocr,hd --max-calls 100000 --grace 72h --threshold 2 --out license.jwt
    """
    from modelseal.device import ActivationRequest
    from modelseal.license import issue_license
    from modelseal.sealed import read_header

    with errors_as_exit_codes():
        if plan not in ("trial", "subscription", "perpetual"):
            fail(f"unknown plan {plan!r}", 2)
        passphrase = os.environ.get(passphrase_env) if passphrase_env else None
        key = load_private_key(signing_key, passphrase)
        req = ActivationRequest.load(request) if request is not None else None
        keys = {ck.key_id: ck for ck in (ContentKey.load(p) for p in content_key or [])}
        delivered: list[tuple[ContentKey, str | None]] = []
        audience: list[str] = []
        for path in model or []:
            header = read_header(path)
            if header.key_id not in keys:
                fail(f"no --content-key with key id {header.key_id} for {path}", 5)
            delivered.append((keys[header.key_id], header.model_id))
            audience.append(header.model_id or header.key_id)
        audience += product or []
        issued = issue_license(
            signing_key=key,
            alg=alg,
            issuer=issuer,
            customer=customer,
            audience=audience,
            request=req,
            content_keys=delivered,
            not_before=parse_time(not_before) if not_before else None,
            valid_for=timedelta(days=days),
            plan=plan,  # type: ignore[arg-type]
            features=_csv(features or []),
            max_calls=max_calls,
            max_devices=max_devices,
            grace=parse_duration(grace) if grace else None,
            heartbeat_url=heartbeat_url,
            heartbeat_interval=heartbeat_interval,
            threshold=threshold,
            allow_vm=allow_vm,
            allow_container=allow_container,
            strict_binding=strict_binding,
            unlock_codes=unlock_codes,
            unlock_hours=unlock_hours,
        )
        out_path.write_text(issued.token + "\n")
        claims = issued.claims
        record_path = out_path.with_name(out_path.name + ".vendor.json")
        if issued.unlock_seed is not None and claims.device and claims.unlock:
            _save_vendor_record(
                record_path,
                claims.jti,
                claims.device.device_id,
                issued.unlock_seed,
                codes=len(claims.unlock.verifiers),
                hours=claims.unlock.hours,
            )
        if as_json:
            emit_json(
                {
                    "out": str(out_path),
                    "license_id": claims.jti,
                    "warnings": list(issued.warnings),
                    "claims": claims.model_dump(mode="json", exclude={"keys"}),
                }
            )
            return
        for warning in issued.warnings:
            out.print(f"[yellow]warning:[/] {warning}")
        expires = datetime.fromtimestamp(claims.exp, UTC).isoformat() if claims.exp else "never"
        out.print(
            f"[green]issued[/] {claims.jti} for {claims.sub} -> {out_path} "
            f"(expires {expires}, {len(delivered)} model key(s) bound to the device)"
        )


def _save_vendor_record(
    path: Path, license_id: str, device_id: str, seed: bytes, *, codes: int, hours: int
) -> None:
    """What the vendor keeps to issue unlock codes later (mode 0600, never shipped).

    The seed is the only thing that makes codes: the license carries their hashes.
    """
    import json

    from modelseal.crypto import b64url
    from modelseal.crypto.keys import _write_private

    record = {
        "license_id": license_id,
        "device_id": device_id,
        "unlock_seed": b64url(seed),
        "unlock_codes": codes,
        "unlock_hours": hours,
    }
    _write_private(path, (json.dumps(record, indent=2) + "\n").encode())


@app.command("unlock-code")
def unlock_code(
    record: Annotated[Path, typer.Option(help="LICENSE.vendor.json written by `license issue`")],
    serial: Annotated[
        int, typer.Option(help="which of the license's codes (0, 1, ...); each is single-use")
    ],
    qr: Annotated[bool, typer.Option(help="also print the code as a QR code")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Read out one of a license's emergency unlock codes (over the phone).

    The license fixed how many codes exist and the hours each grants
    (`license issue --unlock-codes/--unlock-hours`); give out serials in
    order and note which were used.

    Example: modelseal license unlock-code --record license.jwt.vendor.json --serial 0
    """
    import json

    from modelseal.crypto import b64url_decode
    from modelseal.guard.unlock import issue_unlock_code, unlock_qr

    with errors_as_exit_codes():
        try:
            rec = json.loads(record.read_text())
            seed = b64url_decode(rec["unlock_seed"])
            license_id, device_id = str(rec["license_id"]), str(rec["device_id"])
            count, hours = int(rec["unlock_codes"]), int(rec["unlock_hours"])
        except (OSError, ValueError, KeyError, TypeError):
            fail(f"{record} is not a vendor record written by `license issue`", 5)
        if not 0 <= serial < count:
            fail(f"the license carries unlock codes #0 to #{count - 1}, not #{serial}", 2)
        try:
            code = issue_unlock_code(
                seed, license_id=license_id, device_id=device_id, serial=serial
            )
        except ValueError as exc:
            fail(f"cannot make unlock code #{serial}: {exc}", 2)
        if as_json:
            emit_json(
                {"code": code, "license_id": license_id, "serial": serial, "grant_hours": hours}
            )
            return
        out.print(
            f"unlock code #{serial} of {count} for {license_id} (grants {hours} h once):"
            f"\n\n    [bold]{code}[/]\n"
        )
        if qr:
            out.print(unlock_qr(code), highlight=False)


def _render_claims(claims: dict[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False)
    # Verified claims are dumped with their unset members as None (no device
    # binding, perpetual: no exp); they are simply not shown.
    for name in ("iss", "sub", "aud", "jti", "plan", "entitlements", "limits", "grace"):
        if claims.get(name) is not None:
            table.add_row(name, str(claims[name]))
    for name in ("iat", "nbf", "exp"):
        if isinstance(claims.get(name), int):
            table.add_row(name, datetime.fromtimestamp(claims[name], UTC).isoformat())
    dev = claims.get("device")
    if isinstance(dev, dict):
        table.add_row(
            "device",
            f"{dev.get('device_id')} (threshold {dev.get('threshold')} of "
            f"{sum(c.get('weight', 1) for c in dev.get('components', []))})",
        )
    if isinstance(claims.get("keys"), dict):
        table.add_row(
            "content keys", ", ".join(k["key_id"] for k in claims["keys"]["content_keys"])
        )
    out.print(table)


@app.command("inspect")
def inspect(
    file: Annotated[Path, typer.Argument(help="license.jwt")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show a license's header and claims WITHOUT verifying them.

    Example: modelseal license inspect license.jwt
    """
    from modelseal.license import read_unverified

    with errors_as_exit_codes():
        header, claims = read_unverified(file.read_text())
        if as_json:
            emit_json({"verified": False, "header": header, "claims": claims})
            return
        out.print(f"[yellow]UNVERIFIED[/] header: {header}")
        _render_claims(claims, f"{file} (unverified)")


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="license.jwt")],
    trust: Annotated[
        list[Path],
        typer.Option(
            help="[ISSUER=]vendor public key file, directory or trust file (repeat); "
            "ISSUER= pins the issuer the key may sign for"
        ),
    ],
    model: Annotated[Path | None, typer.Option(help="check the license covers this .mseal")] = None,
    device: Annotated[bool, typer.Option(help="also check the binding to this device")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Verify a license's signature, claims and dates (and device binding).

    Exit codes: 0 valid; 10 malformed; 11 untrusted key or algorithm; 12 bad
    signature; 13 expired or not yet valid; 14 wrong audience or issuer; 15
    wrong device or environment; see docs/cli.md.

    Example: modelseal license verify license.jwt --trust vendor.pub --model model.mseal
    """
    from modelseal.device import collect
    from modelseal.license import TrustStore, check_device, verify_license
    from modelseal.sealed import read_header

    with errors_as_exit_codes():
        store = TrustStore.load(*trust)
        audience = None
        if model is not None:
            header = read_header(model)
            audience = header.model_id or header.key_id
        lic = verify_license(file.read_text(), store, audience=audience)
        matched = check_device(lic, collect()) if device else None
        claims = lic.claims.model_dump(mode="json", exclude={"keys"})
        if as_json:
            emit_json(
                {
                    "valid": True,
                    "license_id": lic.claims.jti,
                    "matched_weight": matched,
                    "claims": claims,
                }
            )
            return
        out.print(
            f"[green]valid[/] {lic.claims.jti}, signed by {lic.header['kid']} "
            f"({lic.header['alg']})" + (f", device matches weight {matched}" if device else "")
        )
        _render_claims(claims, str(file))
