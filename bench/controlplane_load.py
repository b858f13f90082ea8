"""Heartbeats against a real control plane process: durable heartbeats/s, p50, p99.

N simulated devices (activated for real, each with its own device
credential) send authenticated heartbeats as fast as the server answers,
from one asyncio client process, for a bounded time, over loopback. The
same run measures the server with group commit (the default: replies after
their batch commits) and with one commit per heartbeat, so the figures are
a ratio against the plain alternative on the same machine at the same time.

    .venv/bin/python bench/controlplane_load.py --devices 256 --seconds 10 \
        [--database-url postgresql://postgres@127.0.0.1:5432/test] [--workers 2] \
        [--ship none|link|refusal] [--group-commit-only]

``--ship`` makes every beat carry one new device audit record (guard/shipping.py):
``link`` a record the server only chains (a heartbeat's), ``refusal`` one it
checks and stores (one ``device_events`` row per beat: the worst case).

With a PostgreSQL URL the benchmark creates its own database and drops it.
Writes JSON to bench/out/controlplane_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from modelseal.crypto import ContentKey, b64url, b64url_decode
from modelseal.license import read_unverified
from modelseal.license.claims import KeyDelivery
from modelseal.license.heartbeat import HeartbeatRequest, authorization_header, device_credential
from modelseal.license.keydelivery import LocalSecret, recover_kek

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.controlplane.conftest import fake_request, free_port

OUT = Path(__file__).with_name("out")


def _server_cpu(pid: int) -> float:
    """CPU seconds of the server and its worker processes (Linux /proc).

    Reported per heartbeat next to the rates: on a shared machine the rate
    depends on what else runs, the CPU cost per heartbeat much less.
    """
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    total = 0
    for proc_id in [pid, *map(int, children.stdout.split())]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{proc_id}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _start(
    data_dir: Path, database_url: str | None, port: int, workers: int, group_commit: bool
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "modelseal",
        "controlplane",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if database_url:
        args += ["--database-url", database_url]
    env = {**os.environ, "MODELSEAL_HEARTBEAT_GROUP_COMMIT": "1" if group_commit else "0"}
    proc = subprocess.Popen(
        args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("server did not start")


def _setup(url: str, token: str, devices: int) -> list[tuple[str, str, bytes]]:
    """Plan, customer, model, one order; activates ``devices`` devices. Returns their
    (license id, device id, credential)."""
    key = ContentKey.generate()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        c.post(
            "/v1/plans",
            json={"name": "bench", "days": 30, "heartbeat_interval": 3600, "threshold": 4},
        ).raise_for_status()
        c.post("/v1/customers", json={"name": "bench"}).raise_for_status()
        model = c.post(
            "/v1/models",
            json={"model_id": "bench/m", "key_id": key.key_id, "content_key": b64url(key.raw())},
        ).json()
        lic = c.post(
            "/v1/orders", json={"customer": "bench", "plan": "bench", "models": [model["id"]]}
        ).json()
        out = []
        for i in range(devices):
            req = fake_request(lic["license_key"], seed=i)
            body = c.post(
                "/v1/activate", json={"license_key": lic["license_key"], "request": req.to_json()}
            ).json()
            claims = read_unverified(body["license"])[1]
            kek = recover_kek(
                KeyDelivery.model_validate(claims["keys"]),
                jti=claims["jti"],
                local=[
                    LocalSecret(kind=comp.kind, secret=b64url_decode(comp.secret))
                    for comp in req.components
                ],
            )
            out.append(
                (
                    claims["jti"],
                    claims["device"]["device_id"],
                    device_credential(kek, jti=claims["jti"]),
                )
            )
    return out


def _next_record(seq: int, prev: str, ship: str) -> dict[str, Any]:
    from modelseal.guard.audit import record_hash

    if ship == "link":
        return {"seq": seq, "prev": prev, "hash": b64url(secrets.token_bytes(32))}
    record: dict[str, Any] = {
        "seq": seq,
        "ts": "2026-12-04T00:00:00.000Z",
        "event": "refused",
        "reason": "feature_missing",
        "data": {"feature": "bench", "also_refused_since_last_record": 0},
        "prev": prev,
    }
    record["hash"] = record_hash(record)
    return record


async def _load(
    url: str, devices: list[tuple[str, str, bytes]], seconds: float, ship: str = "none"
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    shipped = 0
    stop = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=len(devices))

    async def device_loop(
        session: aiohttp.ClientSession, lic: str, dev: str, credential: bytes
    ) -> None:
        nonlocal errors, shipped
        from modelseal.guard.audit import genesis_hash

        # this device's audit chain: the server acks -1 on a first beat, then takes records
        pending: dict[str, Any] | None = None
        head: tuple[int, str] | None = None
        prev, seq = genesis_hash(None), 0
        first = True
        while time.monotonic() < stop:
            if ship != "none" and not first and pending is None:
                pending = _next_record(seq, prev, ship)
            # the shipping fields only when shipping: the same script then measures
            # a server from before shipping existed (A/B on one machine)
            shipping: dict[str, Any] = (
                {
                    "audit_head": (pending["seq"], pending["hash"]) if pending else head,
                    "audit_records": (pending,) if pending else (),
                }
                if ship != "none"
                else {}
            )
            body = HeartbeatRequest(
                license_id=lic,
                device_id=dev,
                nonce=b64url(secrets.token_bytes(16)),
                time=int(time.time()),
                calls_used=1,
                **shipping,
            ).to_body()
            started = time.perf_counter()
            async with session.post(
                url + "/v1/heartbeat",
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "Authorization": authorization_header(credential, body),
                },
            ) as resp:
                await resp.read()
                if resp.status == 200:
                    latencies.append(time.perf_counter() - started)
                    first = False
                    if pending is not None:
                        shipped += 1
                        head = (pending["seq"], pending["hash"])
                        prev, seq, pending = pending["hash"], seq + 1, None
                else:
                    errors += 1  # a record not taken goes again with the next beat

    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.monotonic()
        await asyncio.gather(*(device_loop(session, *d) for d in devices))
        elapsed = time.monotonic() - began
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 100 else [0.0] * 99
    return {
        "heartbeats": len(latencies),
        "errors": errors,
        "records_shipped": shipped,
        "seconds": elapsed,
        "per_second": len(latencies) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
    }


def _run(database_url: str | None, args: argparse.Namespace, group_commit: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "cp"
        token_file = Path(tmp) / "owner.token"
        init = [
            sys.executable,
            "-m",
            "modelseal",
            "controlplane",
            "init",
            "--data-dir",
            str(data_dir),
            "--vendor",
            "bench",
            "--token-out",
            str(token_file),
        ]
        if database_url:
            init += ["--database-url", database_url]
        subprocess.run(init, check=True, capture_output=True)
        port = free_port()
        proc = _start(data_dir, database_url, port, args.workers, group_commit)
        try:
            url = f"http://127.0.0.1:{port}"
            devices = _setup(url, token_file.read_text().strip(), args.devices)
            asyncio.run(_load(url, devices[: min(16, len(devices))], 1.0))  # warm up
            cpu_before = _server_cpu(proc.pid)
            result = asyncio.run(_load(url, devices, args.seconds, args.ship))
            cpu = _server_cpu(proc.pid) - cpu_before
            result["server_cpu_ms_per_heartbeat"] = 1000 * cpu / max(1, result["heartbeats"])
            result["load_average_1m"] = os.getloadavg()[0]
            result["ship"] = args.ship
            if args.ship == "refusal":
                # every answered record must be stored once: the chain check held under load
                report = httpx.get(
                    f"{url}/v1/reports/refusals?format=json",
                    headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
                    timeout=60,
                ).json()
                result["refusals_stored"] = sum(row["refusals"] for row in report)
            return result
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)


def _fresh_pg(base: str) -> tuple[str, str]:
    import psycopg

    name = f"modelseal_bench_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name, name


def _drop_pg(base: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default=None, help="postgresql://... (else SQLite)")
    parser.add_argument(
        "--ship",
        choices=("none", "link", "refusal"),
        default="none",
        help="each beat ships one device audit record: a link, or a refusal the server stores",
    )
    parser.add_argument(
        "--group-commit-only", action="store_true", help="skip the commit-per-heartbeat run"
    )
    args = parser.parse_args()
    if not 1 <= args.devices <= 5000 or not 1 <= args.seconds <= 120:
        raise SystemExit("--devices 1..5000, --seconds 1..120")
    results: dict[str, Any] = {
        "devices": args.devices,
        "workers": args.workers,
        "database": "postgresql" if args.database_url else "sqlite",
    }
    for group_commit in (True,) if args.group_commit_only else (True, False):
        name = "group_commit" if group_commit else "commit_per_heartbeat"
        url, db_name = _fresh_pg(args.database_url) if args.database_url else (None, "")
        try:
            results[name] = _run(url, args, group_commit)
        finally:
            if args.database_url:
                _drop_pg(args.database_url, db_name)
        r = results[name]
        print(
            f"{results['database']:10} {name:22} {r['per_second']:8.0f}/s  "
            f"p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}  "
            f"server CPU {r['server_cpu_ms_per_heartbeat']:.2f} ms/heartbeat  "
            f"load average {r['load_average_1m']:.1f}  ship {args.ship}"
            + (
                f"  records {r['records_shipped']} stored {r['refusals_stored']}"
                if "refusals_stored" in r
                else ""
            )
        )
    if args.group_commit_only:
        OUT.mkdir(exist_ok=True)
        name = f"controlplane_load_{results['database']}_ship_{args.ship}.json"
        (OUT / name).write_text(json.dumps(results, indent=2) + "\n")
        return
    ratio = results["group_commit"]["per_second"] / results["commit_per_heartbeat"]["per_second"]
    results["ratio_group_over_per_heartbeat"] = ratio
    print(f"group commit / commit per heartbeat: {ratio:.2f}x")
    OUT.mkdir(exist_ok=True)
    (OUT / f"controlplane_load_{results['database']}.json").write_text(
        json.dumps(results, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
