"""What a device fingerprint is made of: components, environment, strength.

A fingerprint is a set of *components*, each one fact about the machine
(a firmware UUID, a disk serial, a NIC's burned-in address...). A license is
bound to a threshold of them rather than to all, so that replacing a disk or a
NIC does not lock a customer out, while a copy of the model and license on
another machine matches too few to open the content keys (docs/device.md).

Components are *weighed*, not just counted: a value that travels with a disk
image (``/etc/machine-id``) or that thousands of machines share (the CPU
model) proves much less than a firmware UUID. The weights here are the number
of key shares a component holds; docs/device.md gives the reasoning.

The raw values never leave the device: ``repr`` hides them, activation
requests carry only salted HMACs of them (``modelseal.device.request``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, get_args

Strength = Literal["strong", "weak"]
Virtualization = Literal["none", "vm", "container", "unknown"]

STRENGTHS: Final[tuple[str, ...]] = get_args(Strength)
VIRTUALIZATIONS: Final[tuple[str, ...]] = get_args(Virtualization)
PLATFORMS: Final = ("linux", "darwin", "windows")

#: Upper bounds that keep a hostile source (or request file) from producing
#: absurd fingerprints; real machines are far below them.
MAX_VALUE_LENGTH: Final = 4096
MAX_WEIGHT: Final = 100
MAX_DETAILS: Final = 32
MAX_DETAIL_LENGTH: Final = 200
#: Kinds are dotted lowercase names ("area.fact"), so they read the same in
#: every request, license and log.
KIND_PATTERN: Final = re.compile(r"^[a-z0-9]+(\.[a-z0-9_]+)+$")


@dataclass(frozen=True)
class KindInfo:
    """The strength and weight modelseal gives one kind of component, and why."""

    strength: Strength
    weight: int
    why: str


#: Every kind the built-in sources produce. Strong kinds are set by hardware or
#: firmware and do not travel with a copied disk image; weak kinds either do
#: (machine-id, hostname) or are shared by many machines (CPU model). Every
#: weak kind weighs 1, so "weak weight" and "number of weak components" agree.
COMPONENT_KINDS: Final[dict[str, KindInfo]] = {
    "dmi.product_uuid": KindInfo(
        "strong",
        3,
        "firmware (SMBIOS) UUID: 128 bits, not settable from the OS, survives reinstalls",
    ),
    "dmi.board_serial": KindInfo(
        "strong", 2, "motherboard serial: same SMBIOS table as the UUID, often a placeholder"
    ),
    "dmi.product_serial": KindInfo(
        "strong", 2, "system serial number (macOS IOPlatformSerialNumber)"
    ),
    "disk.root_serial": KindInfo(
        "strong", 2, "serial of the disk holding /: an image copy lands on another disk"
    ),
    "gpu.uuid": KindInfo("strong", 2, "per-GPU UUID burned in by the vendor"),
    "net.mac": KindInfo(
        "strong", 2, "burned-in NIC address: root can change it, and only ~24 bits are unknown"
    ),
    "k8s.cluster_uid": KindInfo(
        "strong", 3, "uid of the kube-system namespace: assigned by the API server, per cluster"
    ),
    "cpu.id": KindInfo("weak", 1, "CPU vendor/family/model/stepping: shared by many machines"),
    "os.machine_id": KindInfo(
        "weak", 1, "/etc/machine-id or MachineGuid: travels with disk images"
    ),
    "os.hostname": KindInfo("weak", 1, "set by anyone with root, copied with configuration"),
}

_PREVIEW_LABEL: Final = b"modelseal/device/v1/preview\0"


def _check_text(name: str, text: object, *, limit: int) -> str:
    if not isinstance(text, str) or not text:
        raise ValueError(f"{name} must be a non-empty string")
    if len(text) > limit:
        raise ValueError(f"{name} is longer than {limit} characters")
    if "\0" in text:
        # The digest input separates kind and value with NUL; a NUL inside
        # either would let two different components hash the same.
        raise ValueError(f"{name} must not contain NUL")
    return text


@dataclass(frozen=True)
class Component:
    """One fact about the device.

    ``value`` is the normalized raw value. It never leaves the device in
    clear: it is excluded from ``repr`` (so logs and tracebacks do not carry
    it) and activation requests hold only salted HMACs of it.
    """

    kind: str
    value: str = field(repr=False)
    strength: Strength
    weight: int

    def __post_init__(self) -> None:
        _check_text("component kind", self.kind, limit=64)
        if not KIND_PATTERN.match(self.kind):
            raise ValueError("component kind must look like 'dmi.product_uuid'")
        _check_text("component value", self.value, limit=MAX_VALUE_LENGTH)
        if self.strength not in STRENGTHS:
            raise ValueError(f"strength must be one of {STRENGTHS}")
        if (
            not isinstance(self.weight, int)
            or isinstance(self.weight, bool)
            or not 1 <= self.weight <= MAX_WEIGHT
        ):
            raise ValueError(f"weight must be an integer in 1..{MAX_WEIGHT}")

    @classmethod
    def of(cls, kind: str, value: str) -> Component:
        """A component of a built-in kind, with the strength and weight from the table."""
        info = COMPONENT_KINDS[kind]
        return cls(kind=kind, value=value, strength=info.strength, weight=info.weight)

    @property
    def preview(self) -> str:
        """8 hex digits of a hash of the value, to tell components apart on screen.

        Not reversible for high-entropy values (UUIDs, serials), but for a
        guessable one (a hostname, a MAC whose vendor prefix is known) it can
        confirm a guess: it is a display aid, not a secret.
        """
        data = _PREVIEW_LABEL + self.kind.encode() + b"\0" + self.value.encode()
        return hashlib.sha256(data).hexdigest()[:8]


@dataclass(frozen=True)
class Environment:
    """Where the fingerprint was taken, and the evidence for it.

    ``virtualization`` is the innermost layer the evidence supports: a
    container on a VM is reported as ``"container"``. ``details`` lists every
    piece of evidence found as ``"source:finding"`` (e.g. ``"cpuinfo:hypervisor"``,
    ``"dmi:kvm"``, ``"cgroup:docker"``), including evidence that was not
    decisive, so the license issuer can judge for itself.
    """

    virtualization: Virtualization
    details: tuple[str, ...]
    platform: str

    def __post_init__(self) -> None:
        if self.virtualization not in VIRTUALIZATIONS:
            raise ValueError(f"virtualization must be one of {VIRTUALIZATIONS}")
        if self.platform not in PLATFORMS:
            raise ValueError(f"platform must be one of {PLATFORMS}")
        if not isinstance(self.details, tuple) or len(self.details) > MAX_DETAILS:
            raise ValueError(f"details must be a tuple of at most {MAX_DETAILS} strings")
        for detail in self.details:
            _check_text("environment detail", detail, limit=MAX_DETAIL_LENGTH)

    @property
    def description(self) -> str:
        return {
            "none": "on bare metal",
            "vm": "in a VM",
            "container": "in a container",
            "unknown": "environment unknown",
        }[self.virtualization]


class FingerprintSource(Protocol):
    """Anything that can list a device's components and describe its environment.

    The built-in sources read the machine itself. There is deliberately no
    source that reads components from an environment variable or a config
    file: a customer who copied a licensed machine could set one to the
    original's values.
    """

    def components(self) -> list[Component]: ...

    def environment(self) -> Environment: ...


class StaticSource:
    """A source over a fixed list of components: how tests and other modules inject them.

    It is for code, not for configuration: nothing reads a StaticSource's
    components from an environment variable or file, and nothing should, or a
    customer on a copied machine could replay the original's values.
    """

    def __init__(self, components: Iterable[Component], environment: Environment) -> None:
        self._components = list(components)
        self._environment = environment

    def components(self) -> list[Component]:
        return list(self._components)

    def environment(self) -> Environment:
        return self._environment

    def __repr__(self) -> str:
        return f"StaticSource({len(self._components)} components, {self._environment!r})"


@dataclass(frozen=True)
class BindingStrength:
    """How much a fingerprint can carry a binding: counts and weights by strength."""

    total: int
    strong: int
    weak: int
    strong_weight: int
    weak_weight: int
    environment: Environment
    threshold: int | None = None

    @property
    def total_weight(self) -> int:
        return self.strong_weight + self.weak_weight

    def weak_only_can_meet(self, threshold: int) -> bool:
        """True when the weak components alone reach ``threshold``.

        Weak components are the ones a copied disk image brings along or many
        machines share, so a binding they can satisfy on their own binds to
        little; the license issuer warns (or refuses under
        ``--strict-binding``). Every weak kind weighs 1, so this compares both
        their count and their weight.
        """
        return self.weak_weight >= threshold

    def summary(self) -> str:
        text = (
            f"{self.strong} strong, {self.weak} weak component"
            f"{'' if self.total == 1 else 's'}; {self.environment.description}"
        )
        if self.threshold is not None and self.weak_only_can_meet(self.threshold):
            text += f"; weak components alone reach threshold {self.threshold}"
        return text

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True)
class DeviceFingerprint:
    """A device's components (deduplicated, sorted) and its environment."""

    components: tuple[Component, ...]
    environment: Environment

    def strength_report(self, threshold: int | None = None) -> BindingStrength:
        strong = [c for c in self.components if c.strength == "strong"]
        weak = [c for c in self.components if c.strength == "weak"]
        return BindingStrength(
            total=len(self.components),
            strong=len(strong),
            weak=len(weak),
            strong_weight=sum(c.weight for c in strong),
            weak_weight=sum(c.weight for c in weak),
            environment=self.environment,
            threshold=threshold,
        )


def fingerprint_from(
    components: Iterable[Component], environment: Environment
) -> DeviceFingerprint:
    """Deduplicate and sort components so the same machine always gives the same tuple."""
    unique: dict[tuple[str, str], Component] = {}
    for component in components:
        if not isinstance(component, Component):
            raise TypeError("a fingerprint source returned something that is not a Component")
        unique.setdefault((component.kind, component.value), component)
    ordered = tuple(unique[key] for key in sorted(unique))
    return DeviceFingerprint(components=ordered, environment=environment)
