"""Sealed Paddle predictors vs predictors from plaintext files, same run.

    .venv/bin/python bench/paddle_load.py [--mib 128] [--rounds 3]

Exports one MLP (``--mib`` of float32 weights) as a PIR program (Paddle 3's
default) and as a legacy program, seals both, then for each round builds a
predictor in a fresh process for every variant (rotating the order):
``paddle.inference.Config(files)`` on the plaintext export, and
``modelseal.load`` on the sealed file (PIR through sealed memfds, legacy
through ``set_model_buffer``). Timing excludes imports and covers building
the predictor and one prediction; peak RSS is VmHWM minus VmRSS before the
load. Round 0 warms the page cache and is not counted. Prints a table and
writes bench/out/paddle_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
MIB = 1 << 20
WIDTH = 2048
VARIANTS = ("plain_pir", "sealed_pir", "plain_legacy", "sealed_legacy", "sealed_legacy_buffers")


def _paddle() -> Any:
    os.environ.setdefault("GLOG_minloglevel", "2")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No ccache found")
        import paddle
    return paddle


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def worker(variant: str, work: Path) -> None:
    import numpy as np

    paddle = _paddle()
    import modelseal

    inference = paddle.inference
    key = modelseal.ContentKey.load(work / "k.json")
    x = np.ones((1, WIDTH), np.float32)
    memfd_bytes = 0
    if variant in ("sealed_pir", "sealed_legacy"):
        header = modelseal.inspect(work / f"{variant.split('_')[1]}.mseal")
        memfd_bytes = sum(e.size for e in header.entries if not e.path.endswith(".info"))
    base = _status("VmRSS")
    t0 = time.perf_counter()
    if variant.startswith("plain"):
        fmt = variant.split("_")[1]
        prog = "model.json" if fmt == "pir" else "model.pdmodel"
        config = inference.Config(str(work / fmt / prog), str(work / fmt / "model.pdiparams"))
        config.disable_gpu()
        config.disable_glog_info()
        predictor = inference.create_predictor(config)
    else:
        fmt = variant.split("_")[1]
        if variant.endswith("_buffers"):  # the fallback where memfd is missing
            from modelseal.loaders import memfile

            memfile.supported = lambda: False
        predictor = modelseal.load(work / f"{fmt}.mseal", key=key, framework="paddle")
    built = time.perf_counter()
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape([1, WIDTH])
    handle.copy_from_cpu(x)
    predictor.run()
    out = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "build_s": built - t0,
                "wall_s": done - t0,
                "extra_rss": _status("VmHWM") - base,
                # memfd pages are shared memory, counted in RSS only while we
                # map them to decrypt: add them for an upper bound of the peak
                "memfd_bytes": memfd_bytes,
                "checksum": float(out.sum()),
            }
        )
    )


def build(work: Path, mib: int) -> int:
    paddle = _paddle()
    from paddle.static import InputSpec

    import modelseal

    layers = max(1, mib * MIB // (WIDTH * WIDTH * 4))
    spec = [InputSpec(shape=[None, WIDTH], dtype="float32", name="x")]

    class MLP(paddle.nn.Layer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.fcs = paddle.nn.LayerList([paddle.nn.Linear(WIDTH, WIDTH) for _ in range(layers)])

        def forward(self, x: Any) -> Any:
            for fc in self.fcs:
                x = paddle.nn.functional.softmax(fc(x), axis=-1)
            return x

    paddle.seed(0)
    net = MLP()
    net.eval()
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(net, str(work / "legacy" / "model"), input_spec=spec)
    paddle.jit.save(net, str(work / "pir" / "model"), input_spec=spec)
    key = modelseal.ContentKey.generate()
    key.save(work / "k.json")
    for fmt in ("pir", "legacy"):
        modelseal.seal(work / fmt, work / f"{fmt}.mseal", key=key)
    return (work / "pir" / "model.pdiparams").stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=OUT / "paddle_work")
    ap.add_argument("--worker", nargs=2, metavar=("VARIANT", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return
    work: Path = args.work
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    size = build(work, args.mib)
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    checksums: dict[str, float] = {}
    for r in range(args.rounds + 1):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        for variant in order:
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", variant, str(work)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": "2"},
            )
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            checksums[variant] = row.pop("checksum")
            if r:
                results[variant].append(row)
    med = {
        v: {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        for v, rows in results.items()
    }
    ratios = {
        "sealed/plain PIR wall": med["sealed_pir"]["wall_s"] / med["plain_pir"]["wall_s"],
        "sealed/plain legacy wall": med["sealed_legacy"]["wall_s"] / med["plain_legacy"]["wall_s"],
        "legacy buffers/memfd wall": med["sealed_legacy_buffers"]["wall_s"]
        / med["sealed_legacy"]["wall_s"],
    }
    for v in VARIANTS:
        ratios[f"{v} peak RSS / params size"] = med[v]["extra_rss"] / size
        if med[v]["memfd_bytes"]:
            ratios[f"{v} peak RSS + memfd / params size"] = (
                med[v]["extra_rss"] + med[v]["memfd_bytes"]
            ) / size
    print(f"\nparams {size / MIB:.0f} MiB, {args.rounds} rounds (medians)")
    print(
        f"{'variant':22s} {'build ms':>10s} {'build+run ms':>13s} {'peak RSS MiB':>13s} "
        f"{'+ memfd MiB':>12s}"
    )
    for v in VARIANTS:
        m = med[v]
        print(
            f"{v:22s} {m['build_s'] * 1e3:10.1f} {m['wall_s'] * 1e3:13.1f} "
            f"{m['extra_rss'] / MIB:13.1f} {(m['extra_rss'] + m['memfd_bytes']) / MIB:12.1f}"
        )
    print()
    for k, val in ratios.items():
        print(f"{k:50s} {val:8.3f}")
    same = len({round(c, 3) for c in checksums.values()}) == 1
    print(f"all variants predict the same: {same}")
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {"params_bytes": size, "median": med, "ratios": ratios, "same_outputs": same}
    (OUT / "paddle_load.json").write_text(json.dumps(summary, indent=2) + "\n")
    import shutil

    shutil.rmtree(work)  # the plaintext export and sealed copies (hundreds of MiB)


if __name__ == "__main__":
    main()
