"""collect() on the machine the tests run on: something sensible, nothing leaked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelseal.device import Environment, collect, make_request
from modelseal.device.linux import cpu_flags

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def test_collect_on_this_machine() -> None:
    fp = collect()
    assert isinstance(fp.environment, Environment)
    assert fp.environment.platform == "linux"
    kinds = [c.kind for c in fp.components]
    assert kinds == sorted(kinds)
    assert fp.components, "a Linux machine has at least a CPU and a hostname"
    assert "cpu.id" in kinds
    for c in fp.components:
        assert c.value not in repr(c)
    report = fp.strength_report()
    assert report.total == len(fp.components)
    request = make_request(fp, label="this machine")
    text = request.to_bytes().decode()
    for c in fp.components:
        # Short values (this machine's hostname is "vm") occur in any text by chance.
        if len(c.value) >= 8:
            assert c.value not in text


def test_environment_says_vm_on_a_vm() -> None:
    # The development and CI machines are Firecracker VMs without DMI whose
    # root filesystem came from a Docker image (so /.dockerenv exists): the
    # hypervisor CPU flag must win over that leftover file.
    try:
        flags = cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    if "hypervisor" not in flags:
        pytest.skip("not running under a hypervisor")
    env = collect().environment
    decisive = [d for d in env.details if d.split(":")[0] in ("cgroup", "mountinfo", "env")]
    decisive += [d for d in env.details if d == "file:/run/.containerenv"]
    assert env.virtualization == ("container" if decisive else "vm")
    assert "cpuinfo:hypervisor" in env.details
