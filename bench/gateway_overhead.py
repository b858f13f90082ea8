"""What the gateway adds: the same model service called directly and through the
gateway (decrypting and not, one and two gateway workers), on loopback.

    .venv/bin/python bench/gateway_overhead.py [--seconds 5] [--rounds 3] [--connections 1,16]
        [--aead sm4-gcm|aes-256-gcm]

Needs ``wrk`` (Debian: ``apt-get install wrk``); this script installs nothing.
A sealed ONNX model licensed to this machine is served by ``modelseal serve``
with an envelope key (responses ~1 KB of JSON, sealed: the direct call does
the same work in the service as the gateway's upstream call). wrk posts one
OIP infer request per call. Scenarios, each at every connection count:

- direct: wrk -> serve (returns envelopes)
- gateway, no decrypt: wrk -> gateway (route decrypt: false) -> serve
- gateway, decrypt: wrk -> gateway (decrypt: true) -> serve
- gateway, decrypt, --workers 2

Reports requests/s, p50/p99 latency, gateway CPU per request (utime+stime of
the gateway's processes over the run, from /proc), and SM2 unwraps per 1,000
responses (from the gateway's /metrics). Upstream, proxy and wrk share the
machine's cores, as in the issue's orientation figures. Writes
bench/out/gateway_overhead-AEAD.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
OUT = ROOT / "bench" / "out"

LUA = """
wrk.method = "POST"
wrk.body = '{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def children(pid: int) -> list[int]:
    out = [pid]
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            if ppid == pid:
                out.append(int(p.name))
    return out


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    threads = min(connections, 2)
    proc = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    text = proc.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        raise SystemExit(f"{non2xx.group(1)} failed responses from {url}:\n{text}")
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "requests": requests}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", default="1,16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--aead",
        default="sm4-gcm",
        choices=["sm4-gcm", "aes-256-gcm"],
        help="the envelopes' AEAD (serve --envelope-aead)",
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk (Debian), then run again")
    conns = [int(c) for c in args.connections.split(",")]
    load_before = os.getloadavg()

    import yaml
    from tests.serve._deployment import MODEL_ID, Server, free_port, make_deployment, serve_args

    from modelseal.gateway import new_api_key

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dep = make_deployment(root, outputs=56)
        sp = free_port()
        serve = Server(
            serve_args(dep, sp, "--envelope-aead", args.aead), sp, cwd=root, ready_path="/metrics"
        )
        key, digest = new_api_key()
        routes = root / "routes.yaml"
        routes.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "routes": [
                        {"id": "sealed", "prefix": "/sealed", "forward_url": serve.url},
                        {
                            "id": "opaque",
                            "prefix": "/opaque",
                            "forward_url": serve.url,
                            "decrypt": False,
                        },
                    ],
                    "api_keys": [{"name": "bench", "sha256": digest, "routes": ["*"]}],
                }
            )
        )
        script = root / "infer.lua"
        script.write_text(LUA % key)
        path = f"/v2/models/{MODEL_ID}/infer"
        body_size = len(
            urllib.request.urlopen(
                urllib.request.Request(
                    serve.url + path,
                    data=b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],'
                    b'"data":[1,2,3,4]}]}',
                )
            ).read()
        )
        gateways = {}
        for workers in (1, 2):
            gp = free_port()
            gateways[workers] = Server(
                [
                    "gateway",
                    "--routes",
                    str(routes),
                    "--envelope-private-key",
                    str(dep.gateway_pem),
                    "--port",
                    str(gp),
                    "--workers",
                    str(workers),
                ],
                gp,
                cwd=root,
                ready_path="/healthz",
            )
        time.sleep(2)  # let the two-worker gateway's second worker come up
        scenarios = [
            ("direct", serve.url + path, None),
            ("gateway, no decrypt", gateways[1].url + "/opaque" + path, gateways[1]),
            ("gateway, decrypt", gateways[1].url + "/sealed" + path, gateways[1]),
            ("gateway, decrypt, 2 workers", gateways[2].url + "/sealed" + path, gateways[2]),
        ]
        runs: list[dict[str, Any]] = []
        try:
            for _, url, _ in scenarios:
                wrk(url, script, 1, 1)  # warm the pools and the session-key cache
            # Rounds interleave the scenarios, so drifting load on a shared machine
            # hits all of them alike; the medians over rounds are reported.
            for _ in range(args.rounds):
                for name, url, gw in scenarios:
                    for c in conns:
                        pids = children(gw.proc.pid) if gw is not None else []
                        cpu0 = cpu_seconds(pids)
                        r = wrk(url, script, c, args.seconds)
                        cpu = cpu_seconds(pids) - cpu0
                        r.update(scenario=name, connections=c)
                        if gw is not None:
                            r["gateway_cpu_us_per_request"] = cpu / r["requests"] * 1e6
                        runs.append(r)
            unwraps = sum(
                metric(g.url, "modelseal_gateway_sm2_unwraps_total") for g in gateways.values()
            )
            opened = sum(
                metric(g.url, "modelseal_gateway_envelopes_opened_total") for g in gateways.values()
            )
        finally:
            for g in gateways.values():
                g.stop()
            serve.stop()

    results: list[dict[str, Any]] = []
    for name, _, _ in scenarios:
        for c in conns:
            mine = [r for r in runs if r["scenario"] == name and r["connections"] == c]
            med: dict[str, Any] = {"scenario": name, "connections": c, "rounds": len(mine)}
            for k in ("rps", "p50_ms", "p99_ms", "requests", "gateway_cpu_us_per_request"):
                if k in mine[0]:
                    med[k] = statistics.median(r[k] for r in mine)
            results.append(med)
    direct = {r["connections"]: r for r in results if r["scenario"] == "direct"}
    load_after = os.getloadavg()
    print(
        f"response body {body_size} bytes ({args.aead} envelope); {args.seconds}s per run; "
        f"medians of {args.rounds} interleaved rounds; wrk; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (2 cores, shared)"
    )
    print(
        f"{'scenario':30} {'conns':>5} {'req/s':>9} {'x direct':>9} {'p50 ms':>8} "
        f"{'+p50 ms':>8} {'p99 ms':>8} {'gw CPU us/req':>14}"
    )
    for r in results:
        d = direct[r["connections"]]
        r["rps_ratio"] = r["rps"] / d["rps"]
        r["added_p50_ms"] = r["p50_ms"] - d["p50_ms"]
        cpu = r.get("gateway_cpu_us_per_request")
        print(
            f"{r['scenario']:30} {r['connections']:>5} {r['rps']:>9.0f} {r['rps_ratio']:>9.2f} "
            f"{r['p50_ms']:>8.3f} {r['added_p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
            f"{'' if cpu is None else f'{cpu:.0f}':>14}"
        )
    by = {(r["scenario"], r["connections"]): r for r in results}
    decrypt_cost = {
        c: 1 - by[("gateway, decrypt", c)]["rps"] / by[("gateway, no decrypt", c)]["rps"]
        for c in conns
    }
    decrypt_cpu = {
        c: by[("gateway, decrypt", c)]["gateway_cpu_us_per_request"]
        / by[("gateway, no decrypt", c)]["gateway_cpu_us_per_request"]
        - 1
        for c in conns
    }
    print(
        "decryption's gateway CPU per request vs the non-decrypting route: "
        + ", ".join(f"{100 * v:+.1f}% at {c} conn" for c, v in decrypt_cpu.items())
    )
    per_1000 = unwraps / opened * 1000 if opened else float("nan")
    print(
        "decryption's throughput cost vs the non-decrypting route: "
        + ", ".join(f"{100 * v:.1f}% at {c} conn" for c, v in decrypt_cost.items())
    )
    print(f"SM2 unwraps per 1,000 responses: {per_1000:.3f} ({unwraps:.0f} in {opened:.0f})")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"gateway_overhead-{args.aead}.json").write_text(
        json.dumps(
            {
                "body_bytes": body_size,
                "runs": runs,
                "seconds": args.seconds,
                "results": results,
                "decrypt_cost": decrypt_cost,
                "decrypt_cpu": decrypt_cpu,
                "aead": args.aead,
                "sm2_unwraps_per_1000": per_1000,
                "load_average": [load_before, load_after],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
