"""Issue #8 item 13: no component comes from a tool on ``PATH`` or a module on ``sys.path``.

The attack: a fake ``nvidia-smi`` first on ``PATH`` made two GPUs appear, and
a license bound to them opened on a machine with no GPU; ``pynvml`` was
imported from ``sys.path``, which the user controls just as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelseal.device._io import run_command, trusted_tool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

FAKE_SMI = """#!/bin/sh
echo "GPU 0: NVIDIA A100 (UUID: GPU-5d5f2f1b-0a35-6e7a-9c4b-2b5c9a8f0e11)"
echo "GPU 1: NVIDIA A100 (UUID: GPU-a1b2c3d4-0a35-6e7a-9c4b-2b5c9a8f0e22)"
"""
FAKE_PYNVML = """
def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlDeviceGetCount(): return 1
def nvmlDeviceGetHandleByIndex(i): return i
def nvmlDeviceGetUUID(h): return "GPU-deadbeef-0a35-6e7a-9c4b-2b5c9a8f0e33"
"""


def test_fake_nvidia_smi_on_path_and_fake_pynvml_add_no_gpu(tmp_path: Path) -> None:
    if trusted_tool("nvidia-smi") is not None:
        pytest.skip("this machine has a real nvidia-smi")
    bin_dir, mod_dir = tmp_path / "bin", tmp_path / "mods"
    bin_dir.mkdir()
    mod_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    (mod_dir / "pynvml.py").write_text(FAKE_PYNVML)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(mod_dir), os.environ.get("PYTHONPATH", "")]),
    }
    # the fake tool really is what PATH finds first
    found = subprocess.run(
        ["nvidia-smi", "-L"], env=env, capture_output=True, text=True, check=False
    )
    assert "GPU-5d5f2f1b" in found.stdout
    r = subprocess.run(
        [sys.executable, "-m", "modelseal.cli", "device", "fingerprint", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    kinds = [c["kind"] for c in json.loads(r.stdout)["components"]]
    assert "gpu.uuid" not in kinds


def test_tools_come_only_from_root_owned_system_directories(tmp_path: Path) -> None:
    sh = trusted_tool("sh")
    assert sh is not None and os.path.isabs(sh)
    # a tool in a directory anyone may write to (here under /tmp, mode 1777) is not trusted
    own = tmp_path / "bin"
    own.mkdir()
    (own / "tool").write_text("#!/bin/sh\necho hi\n")
    (own / "tool").chmod(0o755)
    assert trusted_tool("tool", dirs=[str(own)]) is None
    assert trusted_tool("../bin/sh") is None and trusted_tool("/bin/sh") is None
    assert run_command(["definitely-not-a-tool-here"], 1.0) is None


def test_tools_run_without_the_callers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/nonexistent/evil.so")
    monkeypatch.setenv("MODELSEAL_PROBE", "leaked")
    out = run_command(["env"], 5.0)
    assert out is not None
    assert "LD_PRELOAD" not in out and "MODELSEAL_PROBE" not in out
