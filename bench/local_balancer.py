"""What the local backend's NodePort balancer costs: one replica called directly and
through the deployment's NodePort, on loopback.

    PYTHONPATH=src:. .venv/bin/python bench/local_balancer.py [--requests 300] [--rounds 3]

A sealed ONNX model licensed to this machine (the tests' fixture) is
deployed with the local backend (thread-supervised, one replica, no
envelope). Each round sends ``--requests`` OIP infer calls, one after the
other, in four ways: on one kept-alive connection and with a new
connection per call, each directly to the replica's private port and
through the NodePort. Reports the median per-call latency and the ratio
NodePort / direct. Writes bench/out/local_balancer.json. Nothing is
installed; everything runs on this machine and stops at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
OUT = ROOT / "bench" / "out"

BODY = json.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
).encode()


def calls(port: int, n: int, path: str, *, keep_alive: bool) -> float:
    """Median seconds per call."""
    times: list[float] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(n):
        if not keep_alive:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start = time.perf_counter()
        conn.request("POST", path, BODY, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - start)
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status} from port {port}")
        if not keep_alive:
            conn.close()
    conn.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--supervise", choices=["thread", "process"], default="process")
    args = parser.parse_args()

    from tests.deploy.test_local import SPEC
    from tests.serve._deployment import MODEL_ID, free_port, make_deployment

    from modelseal.deploy import load_bundle
    from modelseal.deploy.backends import wait_ready
    from modelseal.deploy.backends.local import LocalBackend

    path = f"/v2/models/{MODEL_ID}/infer"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dep = make_deployment(root / "model")
        (root / "vendor.pub").write_bytes(dep.trust.read_bytes())
        spec = root / "deploy.yaml"
        spec.write_text(SPEC.format(name="bench", replicas=1, root=dep.root, license=dep.license))
        backend = LocalBackend(root / "data", supervise=args.supervise)
        node_port = free_port()
        try:
            backend.apply(load_bundle(spec), [node_port])
            status = wait_ready(backend, "models", "bench", timeout_s=120)
            if not status.ready:
                raise SystemExit(f"not ready: {status.message}")
            snap = json.loads((Path(status.details["state_dir"]) / "status.json").read_text())
            replica_port = int(snap["replicas"][0]["port"])
            calls(node_port, 50, path, keep_alive=True)  # warm both paths
            calls(replica_port, 50, path, keep_alive=True)
            results: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                for keep_alive in (True, False):
                    mode = "keep-alive" if keep_alive else "new connection"
                    for where, port in (("direct", replica_port), ("NodePort", node_port)):
                        key = f"{where}, {mode}"
                        results.setdefault(key, []).append(
                            calls(port, args.requests, path, keep_alive=keep_alive)
                        )
        finally:
            backend.delete("models", "bench")
            backend.close()

    table: dict[str, Any] = {}
    print(f"{'scenario':32} {'median ms/call':>15} {'/ direct':>9}")
    for mode in ("keep-alive", "new connection"):
        direct = statistics.median(results[f"direct, {mode}"])
        for where in ("direct", "NodePort"):
            value = statistics.median(results[f"{where}, {mode}"])
            table[f"{where}, {mode}"] = {"ms": value * 1000, "ratio": value / direct}
            print(f"{where + ', ' + mode:32} {value * 1000:15.3f} {value / direct:9.2f}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "local_balancer.json").write_text(
        json.dumps({"requests": args.requests, "rounds": args.rounds, "results": table}, indent=1)
    )


if __name__ == "__main__":
    main()
