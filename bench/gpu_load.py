"""Loading onto a device: plain torch, plain safetensors and sealed, same file, same run.

    .venv/bin/python bench/gpu_load.py [--device cuda] [--mib 1024] [--rounds 3]
        [--warmup 1] [--json bench/out/gpu_load.json]

Builds one state dict of float32 matrices (``--mib`` in total), saves it with
``torch.save`` and as safetensors, seals both, then for each round loads every
variant in a fresh process (rotating the order each round):

- ``torch_load``: ``torch.load(path, map_location=device)``
- ``safetensors_load_file``: ``safetensors.torch.load_file(path, device=device)``
- ``sealed_safetensors``: ``modelseal.load(sealed, key=..., device=device)``
- ``sealed_torch``: ``modelseal.load(sealed .pt, key=..., device=device)``

and measures wall time (imports excluded; CUDA synchronised before the clock
stops), host peak RSS above the process's baseline, and on CUDA the device
memory allocated at the peak. ``--device cpu`` runs the same comparison on the
CPU, which is how the suite smoke-tests this script. Prints a table and writes
JSON (medians over the counted rounds, plus every sample).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
MIB = 1 << 20
VARIANTS = ("torch_load", "safetensors_load_file", "sealed_safetensors", "sealed_torch")


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def worker(variant: str, work: Path, device: str) -> dict[str, Any]:
    """One load in this (fresh) process; returns its measurements."""
    import torch
    from safetensors.torch import load_file

    import modelseal

    # what modelseal.load imports on first use is import time, not load time
    import modelseal.crypto
    import modelseal.loaders.dispatch

    torch.set_num_threads(2)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    key = str(work / "model.key")
    base = _status("VmRSS")
    c0 = time.process_time()
    t0 = time.perf_counter()
    if variant == "torch_load":
        result = torch.load(work / "model.pt", map_location=device, weights_only=True)
    elif variant == "safetensors_load_file":
        result = load_file(str(work / "model.safetensors"), device=device)
    elif variant == "sealed_safetensors":
        result = modelseal.load(work / "st.mseal", key=key, device=device)
    elif variant == "sealed_torch":
        result = modelseal.load(work / "pt.mseal", key=key, device=device)
    else:
        raise SystemExit(f"unknown variant {variant}")
    # every byte is where it belongs: safetensors maps lazily on the CPU
    checksum = 0.0
    for name in sorted(result):  # one order for every variant: float sums are not associative
        t = result[name]
        if t.numel():
            checksum += float(t.reshape(-1)[:: max(1, 4096 // t.element_size())].sum())
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {
        "variant": variant,
        "wall_s": wall,
        "cpu_s": time.process_time() - c0,
        "host_extra_rss": _status("VmHWM") - base,
        "device_peak_bytes": torch.cuda.max_memory_allocated() if cuda else 0,
        "checksum": checksum,
        "on_device": all(str(t.device).startswith(device.split(":")[0]) for t in result.values()),
    }
    return out


def build(work: Path, mib: int) -> int:
    import torch
    from safetensors.torch import save_file

    import modelseal

    work.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    per = min(mib, 64) * MIB  # 64 MiB matrices, as in a real checkpoint's big layers
    count = max(1, mib * MIB // per)
    sd = {f"layer{i}.weight": torch.rand(per // 4 // 1024, 1024, generator=g) for i in range(count)}
    sd["bias"] = torch.rand(1000, generator=g)
    torch.save(sd, work / "model.pt")
    save_file(sd, str(work / "model.safetensors"))
    key = modelseal.ContentKey.generate()
    key.save(work / "model.key", overwrite=True)
    for src, dst in (("model.safetensors", "st.mseal"), ("model.pt", "pt.mseal")):
        (work / dst).unlink(missing_ok=True)
        modelseal.seal(work / src, work / dst, key=key, overwrite=True)
    return sum(t.numel() * t.element_size() for t in sd.values())


def run(variant: str, work: Path, device: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", variant, "--workdir", str(work), "--device", device],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--mib", type=int, default=1024, help="model size")
    ap.add_argument("--rounds", type=int, default=3, help="counted rounds")
    ap.add_argument("--warmup", type=int, default=1, help="rounds run first and not counted")
    ap.add_argument("--workdir", type=Path, default=OUT / "gpu_work")
    ap.add_argument("--json", type=Path, default=OUT / "gpu_load.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.workdir, args.device)))
        return

    size = build(args.workdir, args.mib)
    load_before = os.getloadavg()
    samples: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for r in range(args.warmup + args.rounds):
        k = r % len(VARIANTS)
        for variant in VARIANTS[k:] + VARIANTS[:k]:
            res = run(variant, args.workdir, args.device)
            if not res["on_device"]:
                raise SystemExit(f"{variant} did not load onto {args.device}")
            if r >= args.warmup:
                samples[variant].append(res)
            print(
                f"round {r} {variant:24s} {res['wall_s'] * 1e3:9.1f} ms  "
                f"host +{res['host_extra_rss'] / MIB:7.1f} MiB  "
                f"device {res['device_peak_bytes'] / MIB:7.1f} MiB",
                file=sys.stderr,
            )
    checksums = {v: {round(s["checksum"], 3) for s in samples[v]} for v in VARIANTS}
    if len(set().union(*checksums.values())) != 1:
        raise SystemExit(f"variants loaded different data: {checksums}")

    median = {
        v: {
            key: statistics.median(s[key] for s in samples[v])
            for key in ("wall_s", "cpu_s", "host_extra_rss", "device_peak_bytes")
        }
        for v in VARIANTS
    }
    base = median["safetensors_load_file"]["wall_s"]
    summary = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": args.device,
        "model_bytes": size,
        "rounds": args.rounds,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "median": median,
        "ratios": {
            "sealed safetensors / safetensors load_file wall": median["sealed_safetensors"][
                "wall_s"
            ]
            / base,
            "sealed torch / torch.load wall": median["sealed_torch"]["wall_s"]
            / median["torch_load"]["wall_s"],
            "sealed safetensors host peak RSS / model": median["sealed_safetensors"][
                "host_extra_rss"
            ]
            / size,
        },
        "samples": samples,
    }
    print(
        f"\n{size / MIB:.0f} MiB onto {args.device}, {args.rounds} rounds (medians); "
        f"load average {load_before[0]:.2f} before, {summary['load_average_after'][0]:.2f} after"
    )
    print(
        f"{'variant':24s} {'wall ms':>10s} {'CPU ms':>8s} {'host peak MiB':>14s} "
        f"{'device MiB':>11s}"
    )
    for v in VARIANTS:
        m = median[v]
        print(
            f"{v:24s} {m['wall_s'] * 1e3:10.1f} {m['cpu_s'] * 1e3:8.0f} "
            f"{m['host_extra_rss'] / MIB:14.1f} {m['device_peak_bytes'] / MIB:11.1f}"
        )
    print()
    for name, value in summary["ratios"].items():
        print(f"{name:48s} {value:8.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
