"""LinuxSource against fake /sys, /proc and /etc trees."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from modelseal.device import Component, collect
from modelseal.device._io import trusted_tool
from modelseal.device.gpu import gpu_uuids, parse_nvidia_smi_list
from modelseal.device.kubernetes import api_url, parse_namespace_uid
from modelseal.device.linux import cpu_identity, root_mount_device, runtime_mount_text
from tests.device.conftest import CPUINFO, FakeRoot, kinds, values

UUID = "4C4C4544-0042-3510-8052-B4C04F4E3232"

# --- DMI ---------------------------------------------------------------------


def test_dmi_present(fake_root: FakeRoot) -> None:
    fake_root.write("sys/class/dmi/id/product_uuid", UUID + "\n")
    fake_root.write("sys/class/dmi/id/board_serial", "  .7XK2P13.CN1296.  \n")
    comps = {c.kind: c for c in fake_root.source().components()}
    assert comps["dmi.product_uuid"].value == UUID.lower()
    assert comps["dmi.product_uuid"].strength == "strong"
    assert comps["dmi.product_uuid"].weight == 3
    assert comps["dmi.board_serial"].value == ".7XK2P13.CN1296."


def test_dmi_absent_gives_no_dmi_components(fake_root: FakeRoot) -> None:
    fake_root.write("proc/cpuinfo", CPUINFO)
    assert kinds(fake_root.source()) == ["cpu.id"]


@pytest.mark.parametrize(
    "placeholder",
    [
        "To be filled by O.E.M.",
        "Default string",
        "00000000-0000-0000-0000-000000000000",
        "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        "03000200-0400-0500-0006-000700080009",
        "0",
        "   ",
    ],
)
def test_dmi_placeholders_are_not_components(fake_root: FakeRoot, placeholder: str) -> None:
    fake_root.write("sys/class/dmi/id/product_uuid", placeholder + "\n")
    fake_root.write("sys/class/dmi/id/board_serial", placeholder + "\n")
    assert kinds(fake_root.source()) == []


def test_unreadable_file_means_absent_component(fake_root: FakeRoot) -> None:
    # Tests run as root, where chmod 000 does not stop reads; a directory in
    # the file's place makes open() fail the same way a permission error does.
    fake_root.mkdir("sys/class/dmi/id/product_uuid")
    fake_root.write("sys/class/dmi/id/board_serial", "BSN123\n")
    assert kinds(fake_root.source()) == ["dmi.board_serial"]


def test_empty_tree_gives_nothing_and_does_not_raise(fake_root: FakeRoot) -> None:
    source = fake_root.source()
    assert source.components() == []
    assert source.environment().virtualization == "unknown"


# --- NICs --------------------------------------------------------------------


def test_physical_nics_only(fake_root: FakeRoot) -> None:
    fake_root.nic("eth0", "A4:BB:6D:01:02:03")  # physical, burned in
    fake_root.nic("enp3s0", "00:1b:21:aa:bb:cc")  # physical, burned in
    fake_root.nic("wlan0", "a6:bb:6d:01:02:03")  # locally administered (0x02 bit)
    fake_root.nic("eth9", "01:00:5e:00:00:01")  # multicast bit
    fake_root.nic("eth8", "00:00:00:00:00:00")
    fake_root.nic("eth7", "00:1b:21:00:00:07", assign_type="1")  # randomised by the kernel
    fake_root.nic("lo", "00:00:00:00:00:00", physical=False)
    fake_root.nic("docker0", "00:1b:21:00:00:01", physical=False)
    fake_root.nic("br-1234", "00:1b:21:00:00:02", physical=False)
    fake_root.nic("veth12ab", "00:1b:21:00:00:03")  # has a device link but is virtual
    fake_root.nic("ens9", "00:1b:21:00:00:04", physical=False)  # no device link: virtual
    fake_root.nic("eth6", "not-a-mac")
    macs = [c for c in fake_root.source().components() if c.kind == "net.mac"]
    assert sorted(c.value for c in macs) == ["00:1b:21:aa:bb:cc", "a4:bb:6d:01:02:03"]
    assert all(c.strength == "strong" and c.weight == 2 for c in macs)


def test_two_nics_stay_separate_and_sorted(fake_root: FakeRoot) -> None:
    fake_root.nic("eth1", "00:1b:21:00:00:09")
    fake_root.nic("eth0", "00:1b:21:00:00:01")
    fp = collect(fake_root.source())
    assert [c.value for c in fp.components] == ["00:1b:21:00:00:01", "00:1b:21:00:00:09"]


def test_bonded_nic_reports_permanent_address(fake_root: FakeRoot) -> None:
    # A bond gives its slaves the bond's address; the NIC's own is perm_hwaddr.
    fake_root.nic("eth0", "00:1b:21:00:00:01", perm="00:1b:21:00:00:55")
    fake_root.nic("bond0", "00:1b:21:00:00:01", physical=False)
    assert values(fake_root.source(), "net.mac") == ["00:1b:21:00:00:55"]


# --- CPU ---------------------------------------------------------------------


def test_cpu_identity_is_weak_digest(fake_root: FakeRoot) -> None:
    fake_root.write("proc/cpuinfo", CPUINFO)
    (cpu,) = fake_root.source().components()
    assert (cpu.kind, cpu.strength, cpu.weight) == ("cpu.id", "weak", 1)
    assert len(cpu.value) == 64
    assert "Xeon" not in cpu.value


def test_cpu_identity_depends_on_model_not_on_flags_or_count() -> None:
    one_cpu = CPUINFO.split("\n\n")[0]
    assert cpu_identity(CPUINFO) == cpu_identity(one_cpu)
    assert cpu_identity(CPUINFO) == cpu_identity(CPUINFO.replace("fpu vme", "fpu"))
    assert cpu_identity(CPUINFO) != cpu_identity(CPUINFO.replace("stepping\t: 7", "stepping\t: 4"))
    assert cpu_identity("") is None


def test_cpu_identity_arm64() -> None:
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n"
    assert cpu_identity(arm) is not None


# --- root disk ---------------------------------------------------------------


def test_root_disk_nvme_partition_serial(fake_root: FakeRoot) -> None:
    disk = "sys/devices/pci0000:00/0000:00:1d.0/nvme/nvme0/nvme0n1"
    fake_root.write(f"{disk}/nvme0n1p2/partition", "2\n")
    fake_root.write(f"{disk}/device/serial", "S4EWNX0R123456      \n")
    fake_root.link("sys/dev/block/259:2", f"{disk}/nvme0n1p2")
    fake_root.mountinfo_root("259:2", "/dev/nvme0n1p2")
    assert values(fake_root.source(), "disk.root_serial") == ["S4EWNX0R123456"]


def test_root_disk_virtio_serial(fake_root: FakeRoot) -> None:
    disk = "sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda"
    fake_root.write(f"{disk}/serial", "19266318128975417")
    fake_root.link("sys/dev/block/254:0", disk)
    fake_root.mountinfo_root("254:0", "/dev/vda")
    (comp,) = fake_root.source().components()
    assert (comp.kind, comp.value, comp.strength) == (
        "disk.root_serial",
        "19266318128975417",
        "strong",
    )


def test_root_disk_under_lvm_walks_to_the_physical_disk(fake_root: FakeRoot) -> None:
    sda = "sys/devices/pci0000:00/ata1/host0/target0:0:0/0:0:0:0/block/sda"
    fake_root.write(f"{sda}/sda3/partition", "3\n")
    fake_root.write(f"{sda}/device/wwid", "t10.ATA     Samsung SSD 860 S3Z9NB0K12345")
    fake_root.link("sys/class/block/sda3", f"{sda}/sda3")
    dm = "sys/devices/virtual/block/dm-0"
    fake_root.mkdir(f"{dm}/slaves/sda3")
    fake_root.link("sys/dev/block/253:0", dm)
    fake_root.mountinfo_root("253:0", "/dev/mapper/vg-root")
    assert values(fake_root.source(), "disk.root_serial") == [
        "t10.ATA     Samsung SSD 860 S3Z9NB0K12345"
    ]


def test_root_disk_btrfs_anonymous_device_uses_mount_source(fake_root: FakeRoot) -> None:
    disk = "sys/devices/pci0000:00/nvme0n1"
    fake_root.write(f"{disk}/nvme0n1p3/partition", "3\n")
    fake_root.write(f"{disk}/wwid", "eui.0025388b91b2c3d4")
    fake_root.link("sys/class/block/nvme0n1p3", f"{disk}/nvme0n1p3")
    fake_root.mountinfo_root("0:31", "/dev/nvme0n1p3", fstype="btrfs")
    assert values(fake_root.source(), "disk.root_serial") == ["eui.0025388b91b2c3d4"]


def test_overlay_root_has_no_disk(fake_root: FakeRoot) -> None:
    fake_root.mountinfo_root("0:52", "overlay", fstype="overlay")
    assert kinds(fake_root.source()) == []


def test_disk_without_serial_file(fake_root: FakeRoot) -> None:
    disk = "sys/devices/virtual/block/loop0"
    fake_root.mkdir(disk)
    fake_root.link("sys/dev/block/7:0", disk)
    fake_root.mountinfo_root("7:0", "/dev/loop0")
    assert kinds(fake_root.source()) == []


def test_root_mount_device_takes_the_last_root_mount() -> None:
    text = (
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "garbage line\n"
        "2 1 8:17 / / rw shared:1 - ext4 /dev/sdb1 rw\n"
        "3 2 0:5 / /dev rw - devtmpfs udev rw\n"
    )
    assert root_mount_device(text) == ("8:17", "/dev/sdb1")
    assert root_mount_device("") is None


# --- machine-id, hostname ----------------------------------------------------


def test_machine_id_and_hostname_are_weak(fake_root: FakeRoot) -> None:
    fake_root.write("etc/machine-id", "3D1219C7C4C5404AAA1F6D2A48ADFDA4\n")
    fake_root.write("proc/sys/kernel/hostname", "GPU-Node-07\n")
    comps = {c.kind: c for c in fake_root.source().components()}
    assert comps["os.machine_id"].value == "3d1219c7c4c5404aaa1f6d2a48adfda4"
    assert comps["os.hostname"].value == "gpu-node-07"
    assert {c.strength for c in comps.values()} == {"weak"}


@pytest.mark.parametrize("bad", ["uninitialized", "", "xyz", "3d1219c7"])
def test_invalid_machine_id_is_ignored(fake_root: FakeRoot, bad: str) -> None:
    fake_root.write("etc/machine-id", bad + "\n")
    assert kinds(fake_root.source()) == []


def test_hostname_falls_back_to_etc_and_skips_localhost(fake_root: FakeRoot) -> None:
    fake_root.write("proc/sys/kernel/hostname", "localhost\n")
    fake_root.write("etc/hostname", "edge-box\n")
    assert values(fake_root.source(), "os.hostname") == ["edge-box"]


# --- GPUs --------------------------------------------------------------------

SMI_OUTPUT = """GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5D5F2F1B-0A35-6E7A-9C4B-2B5C9A8F0E11)
  MIG 1g.5gb      Device  0: (UUID: MIG-8e1c0f3a-1111-2222-3333-444455556666)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-a1b2c3d4-0a35-6e7a-9c4b-2b5c9a8f0e22)
"""


def test_parse_nvidia_smi_list_ignores_mig() -> None:
    assert parse_nvidia_smi_list(SMI_OUTPUT) == [
        "gpu-5d5f2f1b-0a35-6e7a-9c4b-2b5c9a8f0e11",
        "gpu-a1b2c3d4-0a35-6e7a-9c4b-2b5c9a8f0e22",
    ]
    assert parse_nvidia_smi_list("No devices were found") == []


def test_gpu_uuids_from_nvidia_smi() -> None:
    calls: list[tuple[list[str], float]] = []

    def run(argv: object, timeout: float) -> str | None:
        calls.append((list(argv), timeout))  # type: ignore[call-overload]
        return SMI_OUTPUT

    assert len(gpu_uuids(run)) == 2
    assert calls == [(["nvidia-smi", "-L"], 3.0)]
    assert gpu_uuids(lambda argv, timeout: None) == []


def test_gpus_become_strong_components(fake_root: FakeRoot) -> None:
    source = fake_root.source(gpus=["gpu-1", "gpu-2"])
    comps = source.components()
    assert [(c.kind, c.value, c.strength) for c in comps] == [
        ("gpu.uuid", "gpu-1", "strong"),
        ("gpu.uuid", "gpu-2", "strong"),
    ]


def test_gpu_uuids_of_this_machine() -> None:
    # Reads the real machine, so it assumes nothing about its hardware: with a
    # GPU, whole-GPU UUIDs, lowercased, sorted, unique and stable; without a
    # trusted nvidia-smi, none at all (the CPU CI machines).
    found = gpu_uuids()
    assert found == sorted(set(found)) == gpu_uuids()
    assert all(re.fullmatch(r"gpu-[0-9a-f-]{8,64}", u) for u in found), found
    if trusted_tool("nvidia-smi") is None:
        assert found == []


# --- Kubernetes --------------------------------------------------------------

NAMESPACE = {
    "kind": "Namespace",
    "apiVersion": "v1",
    "metadata": {"name": "kube-system", "uid": "5C1B5E58-1F6E-4C1B-9E2A-0D7B7A1C2F3E"},
}
K8S_ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def _service_account(fake_root: FakeRoot) -> None:
    base = "var/run/secrets/kubernetes.io/serviceaccount"
    fake_root.write(f"{base}/token", "eyJhbGciOi.token.sig\n")
    fake_root.write(f"{base}/ca.crt", "-----BEGIN CERTIFICATE-----\n")


def test_kubernetes_cluster_uid(fake_root: FakeRoot) -> None:
    _service_account(fake_root)
    seen: list[tuple[str, str, Path, float]] = []

    def fetch(url: str, token: str, ca: Path, timeout: float) -> bytes:
        seen.append((url, token, ca, timeout))
        return json.dumps(NAMESPACE).encode()

    comps = fake_root.source(K8S_ENV, kube_fetch=fetch).components()
    assert [(c.kind, c.value, c.strength) for c in comps] == [
        ("k8s.cluster_uid", "5c1b5e58-1f6e-4c1b-9e2a-0d7b7a1c2f3e", "strong")
    ]
    ((url, token, ca, timeout),) = seen
    assert url == "https://10.96.0.1:443/api/v1/namespaces/kube-system"
    assert token == "eyJhbGciOi.token.sig"
    assert ca.name == "ca.crt"
    assert timeout <= 5


@pytest.mark.parametrize("error", [OSError("refused"), TimeoutError(), ValueError("big")])
def test_kubernetes_failures_are_ignored(fake_root: FakeRoot, error: Exception) -> None:
    _service_account(fake_root)

    def fetch(url: str, token: str, ca: Path, timeout: float) -> bytes:
        raise error

    assert fake_root.source(K8S_ENV, kube_fetch=fetch).components() == []


def test_kubernetes_needs_token_and_env(fake_root: FakeRoot) -> None:
    # The default fake fetch fails the test if called.
    assert fake_root.source(K8S_ENV).components() == []
    _service_account(fake_root)
    assert fake_root.source({}).components() == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        json.dumps({"kind": "Status", "code": 403}).encode(),
        json.dumps({"kind": "Namespace", "metadata": {"name": "default", "uid": "x"}}).encode(),
        json.dumps({"kind": "Namespace", "metadata": {"name": "kube-system"}}).encode(),
        json.dumps({"kind": "Namespace", "metadata": {"name": "kube-system", "uid": 5}}).encode(),
        json.dumps({"kind": "Namespace", "metadata": {"name": "kube-system", "uid": " "}}).encode(),
        json.dumps({"metadata": {"name": "kube-system", "uid": "a" * 500}}).encode(),
        b"\xff\xfe",
    ],
)
def test_parse_namespace_uid_rejects(body: bytes) -> None:
    assert parse_namespace_uid(body) is None


def test_parse_namespace_uid_accepts() -> None:
    assert parse_namespace_uid(json.dumps(NAMESPACE).encode()) == (
        "5c1b5e58-1f6e-4c1b-9e2a-0d7b7a1c2f3e"
    )


def test_api_url() -> None:
    assert api_url({}) is None
    assert api_url({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}) == (
        "https://[fd00::1]:6443/api/v1/namespaces/kube-system"
    )
    assert api_url({"KUBERNETES_SERVICE_HOST": "evil.com/x?"}) is None
    assert api_url({"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "x"}) is None


# --- environment -------------------------------------------------------------


def test_bare_metal(fake_root: FakeRoot) -> None:
    fake_root.write("proc/cpuinfo", CPUINFO)
    fake_root.write("sys/class/dmi/id/sys_vendor", "Dell Inc.\n")
    fake_root.write("sys/class/dmi/id/product_name", "PowerEdge R740\n")
    env = fake_root.source().environment()
    assert (env.virtualization, env.details, env.platform) == ("none", (), "linux")


def test_docker_cgroup_is_container(fake_root: FakeRoot) -> None:
    fake_root.write("proc/cpuinfo", CPUINFO)
    fake_root.write(
        "proc/1/cgroup",
        "12:memory:/docker/0123456789abcdef\n0::/system.slice/docker-0123.scope\n",
    )
    env = fake_root.source().environment()
    assert env.virtualization == "container"
    assert "cgroup:docker" in env.details


def test_container_on_a_vm_is_container(fake_root: FakeRoot) -> None:
    fake_root.write("proc/cpuinfo", CPUINFO.replace("fpu vme", "fpu hypervisor vme"))
    fake_root.write("/.dockerenv", "")
    fake_root.write(
        "proc/self/mountinfo",
        "600 500 0:52 / / rw - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABC\n"
        "610 600 8:1 /var/lib/docker/containers/abc/hostname /etc/hostname rw - ext4 /dev/sda1\n",
    )
    env = fake_root.source().environment()
    assert env.virtualization == "container"
    assert env.details == (
        "file:/.dockerenv",
        "mountinfo:docker",
        "cpuinfo:hypervisor",
    )


def test_dockerenv_alone_on_a_vm_is_vm(fake_root: FakeRoot) -> None:
    # This development machine: a Firecracker VM whose rootfs came from a Docker image.
    fake_root.write("proc/cpuinfo", CPUINFO.replace("fpu vme", "fpu hypervisor vme"))
    fake_root.write("/.dockerenv", "")
    fake_root.write("proc/1/cgroup", "0::/\n")
    fake_root.mountinfo_root("254:0", "/dev/vda")
    env = fake_root.source().environment()
    assert env.virtualization == "vm"
    assert env.details == ("file:/.dockerenv", "cpuinfo:hypervisor")


def test_dockerenv_alone_is_container(fake_root: FakeRoot) -> None:
    fake_root.write("proc/cpuinfo", CPUINFO)
    fake_root.write("/.dockerenv", "")
    assert fake_root.source().environment().virtualization == "container"


def test_podman_and_kubernetes_evidence(fake_root: FakeRoot) -> None:
    fake_root.write("proc/cpuinfo", CPUINFO)
    fake_root.write("run/.containerenv", "engine=podman\n")
    env = fake_root.source({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).environment()
    assert env.virtualization == "container"
    assert env.details == ("file:/run/.containerenv", "env:kubernetes")


def test_kubepods_cgroup(fake_root: FakeRoot) -> None:
    fake_root.write("proc/1/cgroup", "0::/kubepods/besteffort/pod1234/abcd\n")
    env = fake_root.source().environment()
    assert env.virtualization == "container"
    assert "cgroup:kubepods" in env.details


def test_docker_host_is_not_a_container(fake_root: FakeRoot) -> None:
    fake_root.write("proc/cpuinfo", CPUINFO)
    fake_root.write("proc/1/cgroup", "0::/init.scope\n")
    fake_root.write(
        "proc/self/mountinfo",
        "27 1 8:2 / / rw - ext4 /dev/sda2 rw\n"
        "300 27 0:52 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay"
        " rw,lowerdir=/var/lib/docker/overlay2/l/X\n",
    )
    assert fake_root.source().environment().virtualization == "none"


def test_runtime_mount_text_only_looks_at_runtime_mounts() -> None:
    text = (
        "1 0 8:2 / / rw - ext4 /dev/sda2 rw\n"
        "2 1 0:52 / /var/lib/docker/x rw - overlay overlay rw,lowerdir=/var/lib/docker/l\n"
    )
    assert "docker" not in runtime_mount_text(text)


@pytest.mark.parametrize(
    ("vendor", "product", "expected"),
    [
        ("QEMU", "Standard PC (Q35 + ICH9, 2009)", "dmi:qemu"),
        ("VMware, Inc.", "VMware Virtual Platform", "dmi:vmware"),
        ("innotek GmbH", "VirtualBox", "dmi:virtualbox"),
        ("Xen", "HVM domU", "dmi:xen"),
        ("Microsoft Corporation", "Virtual Machine", "dmi:hyperv"),
        ("Amazon EC2", "m5.large", "dmi:amazon"),
        ("Google", "Google Compute Engine", "dmi:google"),
        ("Firecracker", "Firecracker", "dmi:firecracker"),
    ],
)
def test_dmi_hypervisor_vendors(
    fake_root: FakeRoot, vendor: str, product: str, expected: str
) -> None:
    fake_root.write("sys/class/dmi/id/sys_vendor", vendor + "\n")
    fake_root.write("sys/class/dmi/id/product_name", product + "\n")
    env = fake_root.source().environment()
    assert env.virtualization == "vm"
    assert expected in env.details


@pytest.mark.parametrize(
    ("vendor", "product"),
    [("Microsoft Corporation", "Surface Pro 9"), ("Amazon EC2", "m5.metal")],
)
def test_lookalike_vendors_are_not_vms(fake_root: FakeRoot, vendor: str, product: str) -> None:
    fake_root.write("proc/cpuinfo", CPUINFO)
    fake_root.write("sys/class/dmi/id/sys_vendor", vendor + "\n")
    fake_root.write("sys/class/dmi/id/product_name", product + "\n")
    assert fake_root.source().environment().virtualization == "none"


def test_hypervisor_cpu_flag_without_dmi_is_vm(fake_root: FakeRoot) -> None:
    fake_root.write("proc/cpuinfo", CPUINFO.replace("fpu vme", "fpu hypervisor vme"))
    env = fake_root.source().environment()
    assert (env.virtualization, env.details) == ("vm", ("cpuinfo:hypervisor",))


def test_full_machine(fake_root: FakeRoot) -> None:
    fake_root.write("sys/class/dmi/id/product_uuid", UUID)
    fake_root.write("sys/class/dmi/id/board_serial", "BSN-1")
    fake_root.nic("eno1", "00:1b:21:00:00:01")
    fake_root.write("proc/cpuinfo", CPUINFO)
    fake_root.write("etc/machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4")
    fake_root.write("etc/hostname", "box")
    fp = collect(fake_root.source(gpus=["gpu-0"]))
    report = fp.strength_report()
    assert (report.strong, report.weak) == (4, 3)
    assert report.summary() == "4 strong, 3 weak components; on bare metal"
    assert all(isinstance(c, Component) for c in fp.components)
