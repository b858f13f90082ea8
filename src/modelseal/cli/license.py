"""``modelseal license``: issue, inspect and verify licenses offline; unlock codes."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modelseal.cli._common import (
    ForceOpt,
    JsonOpt,
    console,
    emit_json,
    errors_as_exit_codes,
    is_stdio,
    out,
    read_text_input,
    write_output,
)
from modelseal.crypto import ContentKey, load_private_key
from modelseal.errors import InvalidArgumentError, KeyFileError, OutputExistsError

app = typer.Typer(help="Issue, inspect and verify licenses.", no_args_is_help=True)

_DURATION = re.compile(r"^(\d{1,12})\s*([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

#: ``--days``: a century.
MAX_DAYS = 36_500


class JwsAlg(StrEnum):
    EdDSA = "EdDSA"
    RS256 = "RS256"
    PS256 = "PS256"
    SM2 = "SM2"


class Plan(StrEnum):
    trial = "trial"
    subscription = "subscription"
    perpetual = "perpetual"


def parse_duration(
    text: str, *, option: str, minimum: timedelta | None = None, maximum: timedelta | None = None
) -> timedelta:
    """``72h``, ``3d``, ``90m``, ``3600`` (seconds), within bounds."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise InvalidArgumentError(f"{option}: cannot read duration {text!r} (use e.g. 72h, 3d)")
    value = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if minimum is not None and value < minimum:
        raise InvalidArgumentError(f"{option} must be at least {_fmt_duration(minimum)}")
    if maximum is not None and value > maximum:
        raise InvalidArgumentError(f"{option} must be at most {_fmt_duration(maximum)}")
    return value


def parse_time(text: str, *, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(
            f"{option}: cannot read time {text!r} (use ISO 8601, e.g. 2027-01-01T00:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _fmt_duration(value: timedelta | int) -> str:
    seconds = int(value.total_seconds()) if isinstance(value, timedelta) else value
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _fmt_time(ts: int | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _csv(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@app.command("issue")
def issue(
    signing_key: Annotated[Path, typer.Option(help="vendor private key (PKCS#8 PEM)")],
    customer: Annotated[str, typer.Option(help="customer the license is for (sub, 1-256 chars)")],
    out_path: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="license file to write (- for stdout when no record is written)"
        ),
    ],
    request: Annotated[Path | None, typer.Option(help="device activation request (JSON)")] = None,
    model: Annotated[
        list[Path] | None, typer.Option(help="sealed model to license (repeat)")
    ] = None,
    content_key: Annotated[
        list[Path] | None,
        typer.Option(help="content key of a --model (repeat; matched by key id)"),
    ] = None,
    product: Annotated[list[str] | None, typer.Option(help="extra audience ids (repeat)")] = None,
    issuer: Annotated[str, typer.Option(help="issuer name (iss)")] = "modelseal-vendor",
    days: Annotated[
        int, typer.Option(min=1, max=MAX_DAYS, help="validity in days (not for perpetual)")
    ] = 365,
    not_before: Annotated[str | None, typer.Option(help="start, ISO 8601 (default now)")] = None,
    plan: Annotated[Plan, typer.Option(help="license plan")] = Plan.subscription,
    features: Annotated[
        list[str] | None, typer.Option(help="entitlements, comma-separated (repeat)")
    ] = None,
    max_calls: Annotated[
        int | None, typer.Option(min=1, help="call limit on the device (default: none)")
    ] = None,
    max_devices: Annotated[
        int | None, typer.Option(min=1, help="device limit, for the control plane")
    ] = None,
    grace: Annotated[
        str | None, typer.Option(help="offline grace with --heartbeat-url, e.g. 72h")
    ] = None,
    heartbeat_url: Annotated[str | None, typer.Option(help="heartbeat endpoint")] = None,
    heartbeat_interval: Annotated[
        int, typer.Option(min=10, max=31 * 86400, help="seconds between heartbeats")
    ] = 3600,
    threshold: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="weight of matching components needed on the device (default: a majority "
            "of the request's total weight, raised above the weak components' weight when "
            "the strong ones allow)",
        ),
    ] = None,
    strict_binding: Annotated[
        bool, typer.Option(help="refuse if weak components alone meet the threshold")
    ] = False,
    allow_vm: Annotated[bool, typer.Option(help="allow virtual machines")] = True,
    allow_container: Annotated[bool, typer.Option(help="allow containers")] = True,
    unlock_codes: Annotated[
        int,
        typer.Option(
            min=0, max=4096, help="one-time emergency unlock codes in the license (0: none)"
        ),
    ] = 8,
    unlock_hours: Annotated[
        int, typer.Option(min=1, max=720, help="hours of grace each unlock code grants")
    ] = 24,
    jws_alg: Annotated[
        JwsAlg | None,
        typer.Option(help="signature algorithm (default: the key's: EdDSA, PS256 or SM2)"),
    ] = None,
    passphrase_env: Annotated[
        str | None, typer.Option(help="env var with the key passphrase")
    ] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sign a license for a device and deliver the models' keys to it, offline.

    With --request, also writes OUT.vendor.json (mode 0600): the vendor
    record, holding the seed of the license's emergency unlock codes. Keep
    it, never ship it: `license unlock-code` needs it to read a code out.

    Example: modelseal license issue --signing-key vendor.pem --request request.json
    --customer ACME --model model.mseal --content-key model.key --days 365
    --features ocr,hd --max-calls 100000 --grace 72h --threshold 2 --out license.jwt
    """
    from modelseal.device import ActivationRequest
    from modelseal.license import issue_license
    from modelseal.sealed import read_header

    with errors_as_exit_codes():
        record_path = None if is_stdio(out_path) else _record_path(out_path)
        if is_stdio(out_path) and as_json:
            raise InvalidArgumentError("--json and --out - would both write to stdout")
        if is_stdio(out_path) and request is not None and unlock_codes > 0:
            raise InvalidArgumentError(
                "--out - cannot carry the vendor record a bound license needs; give a file"
            )
        inputs: list[Path] = [signing_key, *(model or []), *(content_key or [])]
        if request is not None:
            inputs.append(request)
        # Refuse bad outputs before the (slow, key-using) work.
        if not is_stdio(out_path):
            from modelseal._fs import check_output

            check_output(out_path, overwrite=force, inputs=inputs)
            if record_path is not None and request is not None and unlock_codes > 0:
                check_output(record_path, overwrite=force, inputs=inputs)
        passphrase = os.environ.get(passphrase_env) if passphrase_env else None
        key = load_private_key(signing_key, passphrase)
        req = ActivationRequest.load(request) if request is not None else None
        keys = {ck.key_id: ck for ck in (ContentKey.load(p) for p in content_key or [])}
        delivered: list[tuple[ContentKey, str | None]] = []
        audience: list[str] = []
        for path in model or []:
            header = read_header(path)
            if header.key_id not in keys:
                raise KeyFileError(f"no --content-key with key id {header.key_id} for {path}")
            delivered.append((keys[header.key_id], header.model_id))
            audience.append(header.model_id or header.key_id)
        audience += product or []
        issued = issue_license(
            signing_key=key,
            alg=jws_alg.value if jws_alg is not None else None,
            issuer=issuer,
            customer=customer,
            audience=audience,
            request=req,
            content_keys=delivered,
            not_before=parse_time(not_before, option="--not-before") if not_before else None,
            valid_for=timedelta(days=days),
            plan=plan.value,
            features=_csv(features or []),
            max_calls=max_calls,
            max_devices=max_devices,
            grace=parse_duration(grace, option="--grace") if grace else None,
            heartbeat_url=heartbeat_url,
            heartbeat_interval=heartbeat_interval,
            threshold=threshold,
            allow_vm=allow_vm,
            allow_container=allow_container,
            strict_binding=strict_binding,
            unlock_codes=unlock_codes,
            unlock_hours=unlock_hours,
        )
        claims = issued.claims
        written = _write_license_and_record(
            out_path, record_path, issued.token, issued, force=force, inputs=inputs
        )
        if as_json:
            emit_json(
                {
                    "ok": True,
                    "out": str(out_path),
                    "vendor_record": str(record_path) if len(written) > 1 else None,
                    "written": written,
                    "license_id": claims.jti,
                    "warnings": list(issued.warnings),
                    "claims": claims.model_dump(mode="json", exclude={"keys"}),
                }
            )
            return
        for warning in issued.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}")
        if is_stdio(out_path):
            return
        out.print(
            f"[green]issued[/] {claims.jti} for {escape(claims.sub)} -> {escape(str(out_path))} "
            f"(expires {_fmt_time(claims.exp)}, {len(delivered)} model key(s) bound to the device)"
        )
        if len(written) > 1:
            out.print(
                f"wrote {escape(written[1])}: the vendor record (mode 0600) with the seed "
                "of this license's unlock codes, for `modelseal license unlock-code`; keep it "
                "with your records, never ship it"
            )


def _record_path(license_path: Path) -> Path:
    return license_path.with_name(license_path.name + ".vendor.json")


def _write_license_and_record(
    out_path: Path,
    record_path: Path | None,
    token: str,
    issued: Any,
    *,
    force: bool,
    inputs: list[Path],
) -> list[str]:
    """The vendor record first, then the license: a shipped license always has its record.

    Both are staged (on disk, fsynced) before either gets its name; if the
    license cannot be published, the record published for it is removed.
    """
    from modelseal._fs import publish, removed_on_failure, stage_file

    claims = issued.claims
    data = (token + "\n").encode()
    if (
        record_path is None
        or issued.unlock_seed is None
        or claims.device is None
        or claims.unlock is None
    ):
        return [write_output(out_path, data, force=force, inputs=inputs)]
    if record_path.resolve() == out_path.resolve():
        raise OutputExistsError("the license and its vendor record would be the same file")
    record = _vendor_record(
        claims.jti,
        claims.device.device_id,
        issued.unlock_seed,
        codes=len(claims.unlock.verifiers),
        hours=claims.unlock.hours,
    )
    staged_record = stage_file(record_path, record, mode=0o600, overwrite=force, inputs=inputs)
    with removed_on_failure(staged_record):
        staged_license = stage_file(out_path, data, mode=0o644, overwrite=force, inputs=inputs)
    with removed_on_failure(staged_license):
        publish(staged_record, record_path, overwrite=force)
    try:
        publish(staged_license, out_path, overwrite=force)
    except BaseException:
        if not force:
            record_path.unlink(missing_ok=True)
        raise
    return [str(out_path), str(record_path)]


def _vendor_record(
    license_id: str, device_id: str, seed: bytes, *, codes: int, hours: int
) -> bytes:
    """What the vendor keeps to issue unlock codes later (mode 0600, never shipped).

    The seed is the only thing that makes codes: the license carries their hashes.
    """
    from modelseal.crypto import b64url

    record = {
        "what": "modelseal vendor record: keep it, never ship it; "
        "`modelseal license unlock-code --record` reads it",
        "license_id": license_id,
        "device_id": device_id,
        "unlock_seed": b64url(seed),
        "unlock_codes": codes,
        "unlock_hours": hours,
    }
    return (json.dumps(record, indent=2) + "\n").encode()


@app.command("unlock-code")
def unlock_code(
    record: Annotated[Path, typer.Option(help="LICENSE.vendor.json written by `license issue`")],
    serial: Annotated[
        int,
        typer.Option(
            min=0,
            max=4095,
            help="which of the license's codes (0, 1, ...): each works once on the device",
        ),
    ],
    qr: Annotated[bool, typer.Option(help="also print the code as a QR code")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Read out one of a license's emergency unlock codes (over the phone).

    The license fixed how many codes exist and the hours each grants
    (`license issue --unlock-codes/--unlock-hours`). Give out serials in
    order and keep a log per license of those given out: each works once,
    and the device refuses one it has seen.

    Example: modelseal license unlock-code --record license.jwt.vendor.json --serial 0
    """
    from modelseal.crypto import b64url_decode
    from modelseal.guard.unlock import issue_unlock_code, unlock_qr

    with errors_as_exit_codes():
        text = read_text_input(record, what="vendor record", error=KeyFileError)
        try:
            rec = json.loads(text)
            seed = b64url_decode(rec["unlock_seed"])
            license_id, device_id = str(rec["license_id"]), str(rec["device_id"])
            count, hours = int(rec["unlock_codes"]), int(rec["unlock_hours"])
        except (ValueError, KeyError, TypeError):
            raise KeyFileError(
                f"{record} is not a vendor record written by `license issue`"
            ) from None
        if not 0 <= serial < count:
            raise InvalidArgumentError(
                f"the license carries unlock codes #0 to #{count - 1}, not #{serial}"
            )
        try:
            code = issue_unlock_code(
                seed, license_id=license_id, device_id=device_id, serial=serial
            )
        except ValueError as exc:
            # the serial is range-checked above; what remains is a damaged record
            raise KeyFileError(f"{record}: {exc}") from None
        if as_json:
            emit_json(
                {
                    "ok": True,
                    "code": code,
                    "license_id": license_id,
                    "serial": serial,
                    "of": count,
                    "grant_hours": hours,
                }
            )
            return
        out.print(
            f"unlock code #{serial} of {count} for {escape(license_id)} (grants {hours} h once):"
            f"\n\n    [bold]{code}[/]\n"
        )
        if qr:
            out.print(unlock_qr(code), highlight=False)


def _render_claims(claims: dict[str, Any], title: str) -> None:
    """Claims for people: dates, durations and lists written out, no Python reprs."""
    table = Table(title=escape(title), show_header=False)

    def row(name: str, value: object) -> None:
        table.add_row(name, escape(str(value)))

    for name in ("iss", "sub", "jti", "plan"):
        if name in claims:
            row(name, claims[name])
    if "aud" in claims:
        row("aud", ", ".join(map(str, claims["aud"])))
    if "entitlements" in claims:
        row("entitlements", ", ".join(map(str, claims["entitlements"])) or "-")
    limits = claims.get("limits") or {}
    if isinstance(limits, dict):
        row(
            "limits",
            f"calls {limits.get('calls') or 'unlimited'}, devices "
            f"{limits.get('devices') or 'unlimited'}",
        )
    for name in ("iat", "nbf", "exp"):
        if isinstance(claims.get(name), int):
            row(name, _fmt_time(claims[name]))
    if claims.get("exp") is None and "iat" in claims:
        row("exp", "never (perpetual)")
    if isinstance(claims.get("grace"), int):
        row("offline grace", _fmt_duration(claims["grace"]))
    hb = claims.get("heartbeat")
    if isinstance(hb, dict):
        row("heartbeat", f"{hb.get('url')} every {_fmt_duration(int(hb.get('interval', 0)))}")
    dev = claims.get("device")
    if isinstance(dev, dict):
        comps = [c for c in dev.get("components", []) if isinstance(c, dict)]
        total = sum(int(c.get("weight", 1)) for c in comps)
        env = [
            name
            for name, key in (("VMs", "allow_vm"), ("containers", "allow_container"))
            if not dev.get(key, True)
        ]
        row(
            "device",
            f"{dev.get('device_id')}: threshold {dev.get('threshold')} of weight {total} "
            f"({len(comps)} components)" + (f"; refuses {' and '.join(env)}" if env else ""),
        )
    keys = claims.get("keys")
    if isinstance(keys, dict):
        ids = [str(k.get("key_id")) for k in keys.get("content_keys", []) if isinstance(k, dict)]
        row("content keys", ", ".join(ids) or "-")
    out.print(table)


def _read_license(file: Path) -> str:
    from modelseal.license import LicenseFormatError

    return read_text_input(file, what="license", error=LicenseFormatError)


@app.command("inspect")
def inspect(
    file: Annotated[Path, typer.Argument(help="license.jwt (- for stdin)")],
    as_json: JsonOpt = False,
) -> None:
    """Show a license's header and claims WITHOUT verifying them.

    Example: modelseal license inspect license.jwt
    """
    from modelseal.license import read_unverified

    with errors_as_exit_codes():
        header, claims = read_unverified(_read_license(file))
        if as_json:
            emit_json({"ok": True, "verified": False, "header": header, "claims": claims})
            return
        alg, kid = header.get("alg"), header.get("kid")
        out.print(
            f"[yellow]UNVERIFIED[/] license: signed with {escape(str(alg))} by key "
            f"{escape(str(kid))}; nothing below is checked"
        )
        _render_claims(claims, f"{file} (unverified)")


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="license.jwt (- for stdin)")],
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            help="vendor public key file, directory or trust file; ISSUER=FILE pins the "
            "issuer the key may sign for (repeat; default: $MODELSEAL_TRUST)"
        ),
    ] = None,
    model: Annotated[Path | None, typer.Option(help="check the license covers this .mseal")] = None,
    device: Annotated[bool, typer.Option(help="also check the binding to this device")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Verify a license's signature, claims and dates (and device binding).

    Exit codes: 0 valid; 10 malformed; 11 untrusted key or algorithm; 12 bad
    signature; 13 expired or not yet valid; 14 wrong audience or issuer; 15
    wrong device or environment; see docs/cli.md.

    Example: modelseal license verify license.jwt --trust vendor.pub --model model.mseal
    """
    from modelseal.cli._common import trust_paths
    from modelseal.device import collect
    from modelseal.license import TrustStore, check_device, verify_license
    from modelseal.sealed import read_header

    with errors_as_exit_codes():
        store = TrustStore.load(*trust_paths(trust))
        audience = None
        if model is not None:
            header = read_header(model)
            audience = header.model_id or header.key_id
        lic = verify_license(_read_license(file), store, audience=audience)
        matched = check_device(lic, collect()) if device else None
        claims = lic.claims.model_dump(mode="json", exclude={"keys"})
        if as_json:
            emit_json(
                {
                    "ok": True,
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
