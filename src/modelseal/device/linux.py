"""Fingerprint a Linux machine from /sys, /proc and /etc.

Every path is read under ``root`` (default ``/``), so tests point the source
at a fake tree; commands (``nvidia-smi``) and the Kubernetes API are
injected for the same reason. Each reader tolerates missing files and
permission errors: as an unprivileged user, ``product_uuid`` and
``board_serial`` (mode 0400) are simply absent.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

from modelseal.device._io import CommandRunner, clean, meaningful, read_text, run_command
from modelseal.device._view import HostView
from modelseal.device.fingerprint import (
    MAX_DETAIL_LENGTH,
    MAX_DETAILS,
    Component,
    Environment,
    Virtualization,
)
from modelseal.device.gpu import gpu_uuids
from modelseal.device.kubernetes import KubeFetch, cluster_uid, fetch_https

#: Interface name prefixes of virtual devices. Most also lack a ``device``
#: link in sysfs; the list catches the ones that have one (e.g. some tap/vnet).
_VIRTUAL_NIC_PREFIXES: Final = (
    "lo",
    "docker",
    "veth",
    "br-",
    "virbr",
    "vnet",
    "tun",
    "tap",
    "cni",
    "flannel",
    "cali",
    "weave",
    "kube-",
    "vxlan",
    "ifb",
    "dummy",
    "wg",
    "tailscale",
    "zt",
    "bond",
    "team",
)
_MAC: Final = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_MACHINE_ID: Final = re.compile(r"^[0-9a-f]{32}$")

#: DMI strings that mean a hypervisor. Matched case-insensitively against
#: sys_vendor, product_name and board_vendor.
_VM_VENDORS: Final = (
    ("qemu", "qemu"),
    ("kvm", "kvm"),
    ("vmware", "vmware"),
    ("virtualbox", "virtualbox"),
    ("innotek", "virtualbox"),
    ("xen", "xen"),
    ("amazon ec2", "amazon"),
    ("google compute engine", "google"),
    ("firecracker", "firecracker"),
    ("bochs", "bochs"),
    ("parallels", "parallels"),
    ("openstack", "openstack"),
)
#: Words in cgroup paths and mount sources that only container runtimes write.
_RUNTIME_WORDS: Final = ("docker", "containerd", "kubepods", "kubelet", "libpod", "lxc", "crio")
#: Mounts a runtime bind-mounts into every container; their source path names the runtime.
_RUNTIME_MOUNTS: Final = ("/", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf")
#: One disk's serial may sit in any of these files, depending on the driver
#: (virtio: serial; NVMe: device/serial, wwid; SCSI/SATA: device/wwid).
_SERIAL_FILES: Final = ("device/serial", "serial", "wwid", "device/wwid")
_MAX_BLOCK_DEPTH: Final = 8
#: sysfs attributes and /etc files are a line long; /proc tables can be large
#: (cpuinfo is ~1.5 KiB per core, mountinfo grows with every container).
_ATTR_LIMIT: Final = 4096
_TABLE_LIMIT: Final = 1 << 20


class LinuxSource:
    """Components and environment of the Linux machine whose filesystem is at ``root``.

    Components never come from an environment variable or configuration
    file (a customer on a copied machine could set one): ``env`` is read only
    to find the Kubernetes API server, whose answer must still contain the
    cluster's own uid.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        *,
        env: Mapping[str, str] | None = None,
        run: CommandRunner = run_command,
        kube_fetch: KubeFetch = fetch_https,
        gpus: Callable[[], Sequence[str]] | None = None,
        check_view: bool | None = None,
    ) -> None:
        """``check_view`` (default: when ``root`` is ``/``) checks every file read is the
        host's own, not one a namespace mounted over it (``modelseal.device._view``)."""
        self._root = Path(root)
        live = self._root == Path("/") if check_view is None else check_view
        self._view: HostView | None = HostView() if live else None
        self._env = dict(os.environ if env is None else env)
        self._run = run
        self._kube_fetch = kube_fetch
        self._gpus = gpus if gpus is not None else (lambda: gpu_uuids(self._run))

    def __repr__(self) -> str:
        return f"LinuxSource(root={str(self._root)!r})"

    def _path(self, relative: str) -> Path:
        return self._root / relative.lstrip("/")

    def _read(self, relative: str, *, limit: int = _ATTR_LIMIT) -> str | None:
        return self._read_file(self._path(relative), limit=limit)

    def _read_file(self, path: Path, *, limit: int = _ATTR_LIMIT) -> str | None:
        """A file's stripped text; on the live system only if it is the host's own file."""
        if self._view is not None:
            return clean(self._view.read(path, limit))
        return clean(read_text(path, limit=limit))

    # --- components --------------------------------------------------------

    def components(self) -> list[Component]:
        found: list[Component] = []
        readers: tuple[Callable[[], Iterator[Component]], ...] = (
            self._dmi,
            self._macs,
            self._cpu,
            self._root_disk,
            self._gpu,
            self._machine_id,
            self._hostname,
            self._kubernetes,
        )
        for reader in readers:
            try:
                found.extend(reader())
            except (OSError, ValueError, UnicodeError):
                # A reader that trips over an unexpected layout loses its
                # component, never the whole fingerprint.
                continue
        return found

    def _dmi(self) -> Iterator[Component]:
        uuid = meaningful(self._read("sys/class/dmi/id/product_uuid"))
        if uuid is not None:
            yield Component.of("dmi.product_uuid", uuid.lower())
        serial = meaningful(self._read("sys/class/dmi/id/board_serial"))
        if serial is not None:
            yield Component.of("dmi.board_serial", serial)

    def _macs(self) -> Iterator[Component]:
        net = self._path("sys/class/net")
        try:
            names = sorted(entry.name for entry in net.iterdir())
        except OSError:
            return
        for name in names:
            if name.startswith(_VIRTUAL_NIC_PREFIXES):
                continue
            mac = self._physical_mac(net / name)
            if mac is not None:
                yield Component.of("net.mac", mac)

    def _physical_mac(self, iface: Path) -> str | None:
        """The burned-in address of a physical NIC, or None.

        Physical means sysfs links it to a bus ``device``. Burned-in means the
        kernel did not randomise or set it (``addr_assign_type`` 0) and it is
        globally unique: the locally-administered bit marks addresses that
        software (hypervisors, clouds, randomisation) chose. A bonded NIC's
        own address is in ``bonding_slave/perm_hwaddr``.
        """
        if not (iface / "device").exists():
            return None
        assign = self._read_file(iface / "addr_assign_type")
        if assign is not None and assign != "0":
            return None
        mac = self._read_file(iface / "bonding_slave" / "perm_hwaddr") or self._read_file(
            iface / "address"
        )
        if mac is None:
            return None
        mac = mac.lower()
        if not _MAC.match(mac):
            return None
        first = int(mac[:2], 16)
        if first & 0x02 or first & 0x01 or mac == "00:00:00:00:00:00":
            return None  # locally administered, multicast, or unset
        return mac

    def _cpu(self) -> Iterator[Component]:
        identity = cpu_identity(self._read("proc/cpuinfo", limit=_TABLE_LIMIT) or "")
        if identity is not None:
            yield Component.of("cpu.id", identity)

    def _root_disk(self) -> Iterator[Component]:
        disk = self._root_block_device()
        if disk is None:
            return
        for name in _SERIAL_FILES:
            serial = meaningful(self._read_file(disk / name, limit=4096))
            if serial is not None:
                yield Component.of("disk.root_serial", serial)
                return

    def _root_block_device(self) -> Path | None:
        """The sysfs directory of the whole disk holding ``/``, or None."""
        dev = root_mount_device(self._read("proc/self/mountinfo", limit=_TABLE_LIMIT) or "")
        block: Path | None = None
        if dev is not None:
            number, source = dev
            if not number.startswith("0:"):
                block = self._path(f"sys/dev/block/{number}")
            elif source.startswith("/dev/"):
                # btrfs and friends show an anonymous 0:N; the source names the device.
                block = self._path(f"sys/class/block/{source.removeprefix('/dev/')}")
        elif self._root == Path("/"):
            st = os.stat("/")
            block = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
        if block is None:
            return None
        return self._whole_disk(block, depth=0)

    def _whole_disk(self, block: Path, depth: int) -> Path | None:
        if depth > _MAX_BLOCK_DEPTH or not block.exists():
            return None
        resolved = block.resolve()
        if (resolved / "partition").exists():
            resolved = resolved.parent
        slaves = resolved / "slaves"
        try:
            below = sorted(entry.name for entry in slaves.iterdir())
        except OSError:
            below = []
        if below:
            # device-mapper (LVM, LUKS) or md RAID: the serial is on the disk beneath.
            return self._whole_disk(self._path(f"sys/class/block/{below[0]}"), depth + 1)
        return resolved

    def _gpu(self) -> Iterator[Component]:
        for uuid in self._gpus():
            yield Component.of("gpu.uuid", uuid)

    def _machine_id(self) -> Iterator[Component]:
        for relative in ("etc/machine-id", "var/lib/dbus/machine-id"):
            value = self._read(relative)
            if value is not None and _MACHINE_ID.match(value.lower()):
                yield Component.of("os.machine_id", value.lower())
                return

    def _hostname(self) -> Iterator[Component]:
        for relative in ("proc/sys/kernel/hostname", "etc/hostname"):
            value = self._read(relative)
            if value is not None and value.lower() not in ("localhost", "(none)"):
                yield Component.of("os.hostname", value.lower())
                return

    def _kubernetes(self) -> Iterator[Component]:
        if self._view is not None and self._view.in_user_namespace():
            # The API server is found from an environment variable and trusted
            # through a CA file; in a user namespace its owner can replace both
            # (a mount over the service-account directory, a server of their
            # own answering with the licensed cluster's uid).
            return
        uid = cluster_uid(self._root, self._env, self._kube_fetch)
        if uid is not None:
            yield Component.of("k8s.cluster_uid", uid)

    # --- environment -------------------------------------------------------

    def environment(self) -> Environment:
        container = self._container_evidence() + self._view_evidence()
        vm = self._vm_evidence()
        decisive = [d for d in container if d != "file:/.dockerenv"]
        virtualization: Virtualization
        if decisive:
            virtualization = "container"
        elif vm:
            # /.dockerenv alone is a file in the image, and it survives when a
            # Docker image becomes a VM's root filesystem (as on the machines
            # modelseal is developed on): a hypervisor outweighs it.
            virtualization = "vm"
        elif container:
            virtualization = "container"
        elif self._path("proc/cpuinfo").exists():
            virtualization = "none"
        else:
            virtualization = "unknown"
        # Bounded like every Environment, however much evidence a strange system offers.
        details = tuple(d[:MAX_DETAIL_LENGTH] for d in container + vm)[:MAX_DETAILS]
        return Environment(virtualization=virtualization, details=details, platform="linux")

    def _view_evidence(self) -> list[str]:
        """A user namespace, or component files mounted over the host's: a container.

        The component readers run once more (without GPUs or Kubernetes, and
        without the scrypt of a request: this is cheap) so that every file a
        component comes from has been checked, whoever calls what first.
        """
        if self._view is None:
            return []
        self._view.proc_is_real()
        self._view.user_namespace()
        readers: tuple[Callable[[], Iterator[Component]], ...] = (
            self._dmi,
            self._macs,
            self._cpu,
            self._root_disk,
            self._machine_id,
            self._hostname,
        )
        for reader in readers:
            try:
                list(reader())
            except (OSError, ValueError, UnicodeError):
                continue
        return list(self._view.evidence)

    def _container_evidence(self) -> list[str]:
        evidence: list[str] = []
        for marker in ("/.dockerenv", "/run/.containerenv"):
            if self._path(marker).exists():
                evidence.append(f"file:{marker}")
        cgroup = (self._read("proc/1/cgroup", limit=_TABLE_LIMIT) or "").lower()
        evidence.extend(f"cgroup:{w}" for w in _RUNTIME_WORDS if w in cgroup)
        mounts = runtime_mount_text(self._read("proc/self/mountinfo", limit=_TABLE_LIMIT) or "")
        evidence.extend(f"mountinfo:{w}" for w in _RUNTIME_WORDS if w in mounts)
        if self._env.get("KUBERNETES_SERVICE_HOST"):
            evidence.append("env:kubernetes")
        return evidence

    def _vm_evidence(self) -> list[str]:
        evidence: list[str] = []
        vendor = (self._read("sys/class/dmi/id/sys_vendor") or "").lower()
        product = (self._read("sys/class/dmi/id/product_name") or "").lower()
        board = (self._read("sys/class/dmi/id/board_vendor") or "").lower()
        text = f"{vendor}\n{product}\n{board}"
        bare_metal_cloud = product.endswith(".metal")  # EC2 *.metal: Amazon DMI, no hypervisor
        if not bare_metal_cloud:
            for needle, name in _VM_VENDORS:
                if needle in text and f"dmi:{name}" not in evidence:
                    evidence.append(f"dmi:{name}")
            if vendor.startswith("google") and "dmi:google" not in evidence:
                evidence.append("dmi:google")
            # Surface laptops also say "Microsoft Corporation"; Hyper-V guests add this product.
            if "microsoft corporation" in vendor and "virtual machine" in product:
                evidence.append("dmi:hyperv")
        hypervisor = self._read("sys/hypervisor/type", limit=256)
        if hypervisor is not None:
            evidence.append(f"sys:{hypervisor.lower()}")
        if "hypervisor" in cpu_flags(self._read("proc/cpuinfo", limit=_TABLE_LIMIT) or ""):
            evidence.append("cpuinfo:hypervisor")
        return evidence


def _cpu_block(cpuinfo: str) -> dict[str, str]:
    """The ``key: value`` pairs of the first processor (all processors match on x86)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    fields = _cpu_block(cpuinfo)
    return frozenset((fields.get("flags") or fields.get("features") or "").split())


_CPU_KEYS: Final = (
    "vendor_id",
    "cpu family",
    "model",
    "stepping",
    "model name",
    # arm64 reports the implementer/part instead of a vendor and model name.
    "cpu implementer",
    "cpu architecture",
    "cpu variant",
    "cpu part",
    "cpu revision",
)


def cpu_identity(cpuinfo: str) -> str | None:
    """A SHA-256 hex digest of the CPU's vendor, family, model, stepping and name.

    A digest rather than the joined text keeps the value short and uniform;
    it identifies a CPU *model*, which is why the component is weak.
    """
    fields = _cpu_block(cpuinfo)
    parts = [f"{key}={' '.join(fields[key].split())}" for key in _CPU_KEYS if fields.get(key)]
    if not parts:
        return None
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _unescape_mount(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _mountinfo_lines(mountinfo: str) -> Iterator[tuple[str, str, str, str, str, str]]:
    """(major:minor, root, mount point, fstype, source, options) of each well-formed line."""
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(after) < 2:
            continue
        yield (
            fields[2],
            _unescape_mount(fields[3]),
            _unescape_mount(fields[4]),
            after[0],
            _unescape_mount(after[1]),
            " ".join(after[2:]),
        )


def root_mount_device(mountinfo: str) -> tuple[str, str] | None:
    """(``major:minor``, source) of the filesystem mounted on ``/`` (the last such mount)."""
    found: tuple[str, str] | None = None
    for number, _root, mount_point, _fstype, source, _options in _mountinfo_lines(mountinfo):
        if mount_point == "/" and re.match(r"^\d+:\d+$", number):
            found = (number, source)
    return found


def runtime_mount_text(mountinfo: str) -> str:
    """The roots and sources of the mounts a container runtime sets up, lowercased.

    Only ``/`` and the bind-mounted ``/etc/hostname``, ``/etc/hosts`` and
    ``/etc/resolv.conf`` are looked at: a Docker *host* also has mounts under
    ``/var/lib/docker`` (its containers' layers), and must not be mistaken
    for a container.
    """
    parts: list[str] = []
    for _number, root, mount_point, fstype, source, options in _mountinfo_lines(mountinfo):
        if mount_point in _RUNTIME_MOUNTS:
            # An overlay root's options name its layer directories (/var/lib/docker/...).
            parts.append(f"{root} {fstype} {source} {options}")
    return "\n".join(parts).lower()
