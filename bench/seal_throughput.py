"""Sealing and verify throughput against raw AES-256-GCM on the same machine.

    .venv/bin/python bench/seal_throughput.py [--mib 1024] [--rounds 3]

"raw" is ``AESGCM.encrypt_into`` over the same bytes in 1 MiB chunks, in
memory, on one thread and on all cores: the ceiling for any AES-GCM tool
here. "plain copy" writes the same bytes to a new file with
``shutil.copyfile`` (in-kernel copy): the ceiling for anything that writes
a new file of that size on this disk, which is what bounds sealing here.
Sealing adds reading the input and the container's bookkeeping; verify
adds reading the file. Each round
seals to a fresh path (replacing a file on ext4 with ``discard`` costs time
that has nothing to do with sealing). Prints a table and writes
bench/out/seal_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"
MIB = 1 << 20


def raw(data: memoryview, threads: int, decrypt: bytes | None = None) -> float:
    aead = AESGCM(os.urandom(32))
    n = len(data) // MIB
    out = bytearray((MIB + 16) * n)
    ov = memoryview(out)

    def work(ids: range) -> None:
        for i in ids:
            aead.encrypt_into(
                i.to_bytes(12, "big"),
                data[i * MIB : (i + 1) * MIB],
                b"aad",
                ov[i * (MIB + 16) : (i + 1) * (MIB + 16)],
            )

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, [range(k, n, threads) for k in range(threads)]))
    return len(data) / (time.perf_counter() - started) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=OUT / "work")
    args = ap.parse_args()

    import modelseal

    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    src = work / "throughput.bin"
    size = args.mib * MIB
    if not src.exists() or src.stat().st_size != size:
        with open(src, "wb") as fh:
            for _ in range(args.mib):
                fh.write(os.urandom(MIB))
    data = memoryview(src.read_bytes())
    key = modelseal.ContentKey.generate()
    cores = os.cpu_count() or 1
    rows: dict[str, list[float]] = {
        "raw AES-256-GCM encrypt, 1 thread": [],
        f"raw AES-256-GCM encrypt, {cores} threads": [],
        "plain copy (shutil.copyfile, file to file)": [],
        "modelseal seal (file to file)": [],
        "modelseal verify (file)": [],
        "modelseal seal, sm4-gcm": [],
    }
    for r in range(args.rounds + 1):
        results = {
            "raw AES-256-GCM encrypt, 1 thread": raw(data, 1),
            f"raw AES-256-GCM encrypt, {cores} threads": raw(data, cores),
        }
        copy = work / f"throughput.{r}.copy"
        started = time.perf_counter()
        shutil.copyfile(src, copy)
        results["plain copy (shutil.copyfile, file to file)"] = (
            size / (time.perf_counter() - started) / 1e9
        )
        copy.unlink()
        out = work / f"throughput.{r}.mseal"
        started = time.perf_counter()
        modelseal.seal(src, out, key=key, overwrite=True)
        results["modelseal seal (file to file)"] = size / (time.perf_counter() - started) / 1e9
        started = time.perf_counter()
        modelseal.verify(out, key=key)
        results["modelseal verify (file)"] = size / (time.perf_counter() - started) / 1e9
        out.unlink()
        if r <= 1:  # SM4 is a software cipher (~0.1 GB/s): two rounds are enough
            small = work / "throughput.sm4.mseal"
            started = time.perf_counter()
            modelseal.seal(src, small, key=key, aead="sm4-gcm", overwrite=True)
            results["modelseal seal, sm4-gcm"] = size / (time.perf_counter() - started) / 1e9
            small.unlink()
        if r > 0:  # round 0 warms the page cache and the allocator
            for name, value in results.items():
                rows[name].append(value)
        print(
            f"round {r}: " + ", ".join(f"{k}={v:.2f}" for k, v in results.items()), file=sys.stderr
        )
    medians = {k: statistics.median(v) for k, v in rows.items() if v}
    ceiling = medians[f"raw AES-256-GCM encrypt, {cores} threads"]
    copy_rate = medians["plain copy (shutil.copyfile, file to file)"]
    print(f"\n{args.mib} MiB, {args.rounds} rounds, medians in GB/s")
    print(f"{'':45s} {'GB/s':>6s}   {'/ raw':>6s}   {'/ copy':>6s}")
    for name, value in medians.items():
        print(f"{name:45s} {value:6.2f}   {value / ceiling:6.2f}   {value / copy_rate:6.2f}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "seal_throughput.json").write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "mib": args.mib,
                "rounds": args.rounds,
                "gb_per_s": medians,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
