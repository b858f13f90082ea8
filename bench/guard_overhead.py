"""Per-call cost of Guard.check(), against a bare function call, in one run.

    .venv/bin/python bench/guard_overhead.py [--calls 1000000] [--rounds 5]

A license is issued for an injected device (the same code path as a real
one), then ``check()`` is timed in a tight loop: without call counting,
with a feature check, with counting (block reservations of 1,000 calls from
the encrypted state file, so the amortized cost includes the file
transactions), and the async ``acheck()``. Targets: <= 5 us per check,
<= 20 us with counting. Prints a table and writes bench/out/guard_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    from modelseal.crypto import ContentKey, generate_private_key
    from modelseal.device import Component, Environment, StaticSource, make_request
    from modelseal.device import collect as collect_device
    from modelseal.guard import Guard
    from modelseal.license import TrustStore, issue_license

    comps = [
        Component(kind="dmi.product_uuid", value="bench-uuid", strength="strong", weight=3),
        Component(kind="net.mac", value="52:54:00:00:00:01", strength="strong", weight=2),
        Component(kind="os.hostname", value="bench", strength="weak", weight=1),
    ]
    source = StaticSource(comps, Environment(virtualization="none", details=(), platform="linux"))
    vendor = generate_private_key("ed25519")
    request = make_request(collect_device(source), label="bench")

    def guard_for(max_calls: int | None, state: str) -> Guard:
        token = issue_license(
            signing_key=vendor,
            issuer="bench",
            customer="bench",
            audience=["bench/model"],
            request=request,
            content_keys=[(ContentKey.generate(), "bench/model")],
            features=["ocr"],
            max_calls=max_calls,
            threshold=4,
        ).token
        return Guard(
            token,
            TrustStore([vendor.public_key()]),
            state_dir=state,
            audience="bench/model",
            source=source,
            recheck_every=timedelta(seconds=30),
            reserve_calls=1000,
        )

    n = args.calls

    def bare() -> None:
        return None

    with tempfile.TemporaryDirectory() as tmp:
        plain = guard_for(None, f"{tmp}/a")
        counted = guard_for(10 * n * (args.rounds + 1), f"{tmp}/b")
        cases = {
            "bare function call": bare,
            "guard.check()": plain.check,
            "guard.check('ocr')": lambda: plain.check("ocr"),
            "guard.check() with call counting": counted.check,
        }
        results: dict[str, list[float]] = {k: [] for k in cases}
        results["await guard.acheck()"] = []
        for r in range(args.rounds + 1):
            for name, fn in cases.items():
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                per_call = (time.perf_counter() - start) / n * 1e6
                if r:
                    results[name].append(per_call)

            async def loop() -> float:
                start = time.perf_counter()
                for _ in range(n // 10):
                    await plain.acheck()
                return (time.perf_counter() - start) / (n // 10) * 1e6

            per = asyncio.run(loop())
            if r:
                results["await guard.acheck()"].append(per)
        usage = counted.usage()
        counted.close()
    medians = {k: statistics.median(v) for k, v in results.items()}
    bare_cost = medians["bare function call"]
    print(f"\n{n:,} calls per round, {args.rounds} rounds, median microseconds per call")
    print(f"{'':40s} {'us/call':>9s} {'minus bare call':>16s}")
    for name, value in medians.items():
        print(f"{name:40s} {value:9.3f} {value - bare_cost:16.3f}")
    print(f"(counted calls recorded in the state file: {usage:,})")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "guard_overhead.json").write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "calls": n,
                "rounds": args.rounds,
                "median_us": medians,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
