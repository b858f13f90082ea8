"""Rule: with NVML (pynvml) present, a machine's whole-GPU UUIDs come from it,
in the same form as from ``nvidia-smi -L`` (lowercased ``gpu-...``), MIG
instances left out (docs/device.md, GPU component). No test covered the NVML
path: it lowercased the UUIDs and then matched them against an upper-case
``GPU-`` pattern, so every GPU was dropped and a GPU box lost its strongest
components. A stand-in ``pynvml`` module replaces the driver here."""

from __future__ import annotations

import sys
import types

import pytest

from modelseal.device.gpu import gpu_uuids, parse_nvidia_smi_list

UUIDS = [
    b"GPU-5B1C3F0E-0D2A-4E5B-9C1D-2F3E4A5B6C7D",
    "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9",
    "MIG-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9",
]


def _fake_nvml(uuids: list[bytes | str], *, init_fails: bool = False) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    state = {"shutdown": 0}

    def init() -> None:
        if init_fails:
            raise RuntimeError("NVML Shared Library Not Found")

    def shutdown() -> None:
        state["shutdown"] += 1

    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlShutdown = shutdown  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: len(uuids)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUUID = lambda handle: uuids[handle]  # type: ignore[attr-defined]
    nvml.state = state  # type: ignore[attr-defined]
    return nvml


def test_nvml_uuids_are_read_lowercased_without_mig(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = _fake_nvml(UUIDS)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)

    def no_smi(argv: object, timeout: float) -> str | None:
        raise AssertionError("nvidia-smi must not run when NVML answered")

    assert gpu_uuids(no_smi) == [
        "gpu-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9",
        "gpu-5b1c3f0e-0d2a-4e5b-9c1d-2f3e4a5b6c7d",
    ]
    assert nvml.state["shutdown"] == 1  # type: ignore[attr-defined]


def test_nvml_and_nvidia_smi_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    smi = (
        "GPU 0: NVIDIA A100 (UUID: GPU-5B1C3F0E-0D2A-4E5B-9C1D-2F3E4A5B6C7D)\n"
        "  MIG 1g.5gb Device 0: (UUID: MIG-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9)\n"
        "GPU 1: NVIDIA A100 (UUID: GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9)\n"
    )
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(UUIDS))
    assert gpu_uuids(lambda argv, timeout: None) == parse_nvidia_smi_list(smi)


def test_a_failing_nvml_falls_back_to_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([], init_fails=True))
    smi = "GPU 0: T4 (UUID: GPU-5B1C3F0E-0D2A-4E5B-9C1D-2F3E4A5B6C7D)\n"
    assert gpu_uuids(lambda argv, timeout: smi) == ["gpu-5b1c3f0e-0d2a-4e5b-9c1d-2f3e4a5b6c7d"]
