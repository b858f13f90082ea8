"""Sealed load vs plain load, in separate processes, alternating, same run.

    .venv/bin/python bench/load_overhead.py [--gib 1.0] [--torch-mb 100] [--rounds 3]
        [--embedding-mb 256] [--no-peer] [--only sealed_torch,plain_torch]

Builds a ~1 GiB safetensors file of random tensors and a ~100 MB torch state
dict, seals both, then for each round loads every variant in a fresh process
(rotating the order each round), measuring load wall time and peak RSS above
the process's baseline. When the ``cryptotensors`` package is installed it is
run on the same safetensors file as the peer, and each tool reads one small
slice of one tensor, and one row of a 256 MiB embedding tensor (a file of its
own); a slice variant reports the median of 7 reads from fresh handles in
its process (a millisecond read drowns in one scheduling hiccup otherwise).
When ``tensorizer`` is installed (bench/_peer_tensorizer.py says how)
its plain load (default and 2 reader threads) and its encrypted load run on
the same tensors. Round 0 warms the page cache and is not counted.

Each load reports wall time and CPU time (user + system of all its threads).
On a shared machine wall time swings with the load, and a loader with more
threads than cores takes a larger share of a busy machine; CPU time is the
steadier figure, so both ratios are printed. The load average is printed
before and after the run (and saved): quote it with the figures.
Prints a table and writes bench/out/load_overhead.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"
MIB = 1 << 20


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "n/a"


def machine() -> dict[str, Any]:
    """What decides these figures besides our code, recorded with them.

    On the project's VMs fresh memory is what a load pays for (first-touch
    population, 0.4-0.6 ms per MiB per thread), and the hypervisor returns
    freed 2 MiB blocks to the host (virtio-balloon free page reporting), so
    huge pages come back cold and cost 3 x small ones there; on a machine
    without reporting they cost a quarter (bench/RESULTS.md).
    """
    import platform

    from cryptography.hazmat.backends.openssl import backend

    reported = _read("/sys/module/page_reporting/parameters/reported_kib")
    cpu = "n/a"
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "usable_cpus": len(os.sched_getaffinity(0)),
        "openssl": backend.openssl_version_text(),
        "thp_enabled": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "thp_defrag": _read("/sys/kernel/mm/transparent_hugepage/defrag"),
        "free_page_reporting_kib": reported,
    }


def busy_jiffies() -> int:
    """Non-idle CPU time of the whole machine so far (``/proc/stat``), in clock ticks."""
    fields = [int(x) for x in _read("/proc/stat").splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # minus idle and iowait


def build_safetensors(path: Path, gib: float) -> int:
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    total = int(gib * (1 << 30))
    tensors: dict[str, Any] = {}
    # a mix of big matrices and small odd-shaped ones, as in a real checkpoint
    big = 64 * MIB
    i = 0
    while total > big:
        tensors[f"big.{i}"] = torch.from_numpy(rng.random((4096, big // 4 // 4096), np.float32))
        total -= big
        i += 1
    for j in range(64):
        n = max(1, total // 4 // 64)
        tensors[f"small.{j}"] = torch.from_numpy(rng.random(n, np.float32) + j)
    save_file(tensors, str(path))
    return path.stat().st_size


def build_embedding(path: Path, mib: int) -> int:
    """One embedding matrix of ``mib`` MiB, rows of 4 KiB (1024 float32)."""
    import torch
    from safetensors.torch import save_file

    rows = mib * MIB // 4096
    data = np.random.default_rng(2).random((rows, 1024), np.float32)
    save_file({"embed.weight": torch.from_numpy(data)}, str(path))
    return path.stat().st_size


def build_torch(path: Path, mb: int) -> int:
    import torch

    g = torch.Generator().manual_seed(1)
    per = 4 * MIB
    sd = {f"layer{i}.weight": torch.rand(per // 4, generator=g) for i in range(mb * MIB // per)}
    torch.save(sd, path)
    return path.stat().st_size


def run_worker(variant: str, path: Path, extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench._worker", variant, str(path), extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--torch-mb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--embedding-mb",
        "--embed-mib",
        dest="embed_mib",
        type=int,
        default=256,
        help="size in MiB of the embedding matrix whose one row is read (the slice case)",
    )
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated variant names to run (default: all); files are built anyway",
    )
    ap.add_argument("--no-peer", action="store_true", help="skip cryptotensors and tensorizer")
    ap.add_argument("--workdir", type=Path, default=OUT / "work")
    args = ap.parse_args()

    import modelseal

    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    st_path, pt_path = work / "model.safetensors", work / "model.pt"
    embed_path = work / "embed.safetensors"
    st_size = build_safetensors(st_path, args.gib)
    pt_size = build_torch(pt_path, args.torch_mb)
    build_embedding(embed_path, args.embed_mib)
    key = modelseal.ContentKey.generate()
    key.save(work / "model.key", overwrite=True)
    seal_times = {}
    for src, dst in (
        (st_path, work / "st.mseal"),
        (pt_path, work / "pt.mseal"),
        (embed_path, work / "embed.mseal"),
    ):
        dst.unlink(missing_ok=True)
        t = time.perf_counter()
        modelseal.seal(src, dst, key=key, overwrite=True)
        seal_times[dst.name] = time.perf_counter() - t

    variants: list[tuple[str, Path, str]] = [
        ("plain_safetensors_mmap", st_path, ""),
        ("plain_safetensors_read", st_path, ""),
        ("sealed_safetensors", work / "st.mseal", str(work / "model.key")),
        ("plain_torch", pt_path, ""),
        ("sealed_torch", work / "pt.mseal", str(work / "model.key")),
        ("sealed_slice", work / "st.mseal", str(work / "model.key")),
        ("sealed_slice_embed", work / "embed.mseal", str(work / "model.key")),
    ]
    peer = importlib.util.find_spec("cryptotensors") is not None and not args.no_peer
    if peer:
        from bench._peer_cryptotensors import encrypt

        ct_path = work / "model.ct.safetensors"
        ct_key = encrypt(st_path, ct_path, work)
        ct_embed = work / "embed.ct.safetensors"
        (work / "embed-keys").mkdir(exist_ok=True)
        ct_embed_key = encrypt(embed_path, ct_embed, work / "embed-keys")
        variants += [
            ("cryptotensors_safetensors", ct_path, ct_key),
            ("cryptotensors_slice", ct_path, ct_key),
            ("cryptotensors_slice_embed", ct_embed, ct_embed_key),
        ]
    tz = importlib.util.find_spec("tensorizer") is not None and not args.no_peer
    tz_seconds = (0.0, 0.0)
    if tz:
        from bench._peer_tensorizer import serialize

        tz_key, *tz_rest = serialize(st_path, work / "model.tz", work / "model.enc.tz", work)
        tz_seconds = (tz_rest[0], tz_rest[1])
        variants += [
            ("tensorizer_plain", work / "model.tz", ""),
            ("tensorizer_plain_2readers", work / "model.tz", ""),
            ("tensorizer_encrypted", work / "model.enc.tz", tz_key),
        ]

    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {v[0] for v in variants}
        if unknown:
            raise SystemExit(f"unknown or unavailable variants: {', '.join(sorted(unknown))}")
        variants = [v for v in variants if v[0] in wanted]
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f}", file=sys.stderr)
    busy_before, started = busy_jiffies(), time.monotonic()
    results: dict[str, list[dict[str, Any]]] = {v[0]: [] for v in variants}
    for r in range(args.rounds + 1):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for name, path, extra in order:
            res = run_worker(name, path, extra)
            if r > 0:
                results[name].append(res)
            cpu = "" if res.get("cpu") is None else f"cpu {res['cpu'] * 1e3:7.0f} ms  "
            print(
                f"round {r} {name:28s} {res['wall'] * 1e3:9.1f} ms  {cpu}"
                f"peak +{(res['peak_rss'] - res['base_rss']) / MIB:7.1f} MiB",
                file=sys.stderr,
            )
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f}", file=sys.stderr)
    # CPU the machine spent on anything but idle during the rounds, as a share of
    # all its CPUs: the workers' own share is small (imports, then one load each),
    # so a high figure means neighbours were running
    elapsed = time.monotonic() - started
    busy_share = (
        (busy_jiffies() - busy_before)
        / os.sysconf("SC_CLK_TCK")
        / (elapsed * (os.cpu_count() or 1))
    )

    def med(name: str, key: str) -> float:
        if key == "extra_rss":
            return statistics.median(x["peak_rss"] - x["base_rss"] for x in results[name])
        if key == "cpu" and results[name][0].get("cpu") is None:
            return float("nan")
        return statistics.median(x[key] for x in results[name])

    summary: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "safetensors_bytes": st_size,
        "torch_bytes": pt_size,
        "rounds": args.rounds,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "machine_busy_share": busy_share,
        "machine": machine(),
        "seal_seconds": seal_times,
        "median": {
            n: {"wall_s": med(n, "wall"), "cpu_s": med(n, "cpu"), "extra_rss": med(n, "extra_rss")}
            for n in results
        },
    }
    m = summary["median"]
    if args.only:
        _print_table(summary, results, st_size, pt_size, args.rounds, {})
        return
    ratios = {
        "sealed / plain safetensors (mmap) wall": m["sealed_safetensors"]["wall_s"]
        / m["plain_safetensors_mmap"]["wall_s"],
        "sealed / plain safetensors (read+load) wall": m["sealed_safetensors"]["wall_s"]
        / m["plain_safetensors_read"]["wall_s"],
        "sealed safetensors peak RSS / model size": m["sealed_safetensors"]["extra_rss"] / st_size,
        "plain (mmap) peak RSS / model size": m["plain_safetensors_mmap"]["extra_rss"] / st_size,
        "plain (read+load) peak RSS / model size": m["plain_safetensors_read"]["extra_rss"]
        / st_size,
        "sealed/plain torch.load wall": m["sealed_torch"]["wall_s"] / m["plain_torch"]["wall_s"],
        "sealed/plain torch.load CPU": m["sealed_torch"]["cpu_s"] / m["plain_torch"]["cpu_s"],
        "sealing GB/s (safetensors)": st_size / seal_times["st.mseal"] / 1e9,
    }
    if peer:
        ct_seconds = json.loads(Path(ct_key).read_text())["encrypt_seconds"]
        ratios["cryptotensors encrypt GB/s"] = st_size / ct_seconds / 1e9
        ratios["sealed/cryptotensors wall"] = (
            m["sealed_safetensors"]["wall_s"] / m["cryptotensors_safetensors"]["wall_s"]
        )
        ratios["sealed/cryptotensors CPU"] = (
            m["sealed_safetensors"]["cpu_s"] / m["cryptotensors_safetensors"]["cpu_s"]
        )
        ratios["cryptotensors peak RSS / model size"] = (
            m["cryptotensors_safetensors"]["extra_rss"] / st_size
        )
        ratios["cryptotensors slice / sealed slice wall"] = (
            m["cryptotensors_slice"]["wall_s"] / m["sealed_slice"]["wall_s"]
        )
        ratios[f"cryptotensors / sealed one row of {args.embed_mib} MiB wall"] = (
            m["cryptotensors_slice_embed"]["wall_s"] / m["sealed_slice_embed"]["wall_s"]
        )
    if tz:
        sealed = m["sealed_safetensors"]["wall_s"]
        ratios["sealed/tensorizer plain wall"] = sealed / m["tensorizer_plain"]["wall_s"]
        ratios["sealed/tensorizer plain (2 readers) wall"] = (
            sealed / m["tensorizer_plain_2readers"]["wall_s"]
        )
        ratios["sealed/tensorizer encrypted wall"] = sealed / m["tensorizer_encrypted"]["wall_s"]
        sealed_cpu = m["sealed_safetensors"]["cpu_s"]
        ratios["sealed/tensorizer plain CPU"] = sealed_cpu / m["tensorizer_plain"]["cpu_s"]
        ratios["sealed/tensorizer plain (2 readers) CPU"] = (
            sealed_cpu / m["tensorizer_plain_2readers"]["cpu_s"]
        )
        ratios["sealed/tensorizer encrypted CPU"] = sealed_cpu / m["tensorizer_encrypted"]["cpu_s"]
        ratios["tensorizer peak RSS / model size"] = m["tensorizer_plain"]["extra_rss"] / st_size
        ratios["tensorizer encrypted peak RSS / model size"] = (
            m["tensorizer_encrypted"]["extra_rss"] / st_size
        )
        ratios["tensorizer encrypted save GB/s"] = st_size / tz_seconds[1] / 1e9
    _print_table(summary, results, st_size, pt_size, args.rounds, ratios)


def _print_table(
    summary: dict[str, Any],
    results: dict[str, list[dict[str, Any]]],
    st_size: int,
    pt_size: int,
    rounds: int,
    ratios: dict[str, float],
) -> None:
    summary["ratios"] = ratios
    m = summary["median"]
    print(
        f"\nsafetensors {st_size / MIB:.0f} MiB, torch {pt_size / MIB:.0f} MiB, "
        f"{rounds} rounds (medians); load average "
        f"{summary['load_average_before'][0]:.2f} before, "
        f"{summary['load_average_after'][0]:.2f} after; machine busy "
        f"{summary['machine_busy_share']:.0%} during the rounds (this run's workers included)"
    )
    print("machine: " + ", ".join(f"{k} {v}" for k, v in summary["machine"].items()))
    print(f"{'variant':30s} {'wall ms':>10s} {'CPU ms':>8s} {'peak RSS above base MiB':>24s}")
    for name in results:
        print(
            f"{name:30s} {m[name]['wall_s'] * 1e3:10.1f} {m[name]['cpu_s'] * 1e3:8.0f} "
            f"{m[name]['extra_rss'] / MIB:24.1f}"
        )
    print()
    for k, v in ratios.items():
        print(f"{k:45s} {v:8.3f}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "load_overhead.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
