"""bench/gpu_load.py runs end to end on the CPU (it is written for a GPU machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_load_bench_runs_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_load.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu_load.py"),
            "--device",
            "cpu",
            "--mib",
            "2",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["device"] == "cpu" and summary["model_bytes"] >= 2 << 20
    assert set(summary["median"]) == {
        "torch_load",
        "safetensors_load_file",
        "sealed_safetensors",
        "sealed_torch",
    }
    for sample in (s for runs in summary["samples"].values() for s in runs):
        assert sample["on_device"] and sample["wall_s"] > 0
    assert "sealed_safetensors" in proc.stdout and "host peak" in proc.stdout
