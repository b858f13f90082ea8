"""Licenses need a device: these fixtures build one from injected components
(StaticSource), never from the machine or the environment."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from modelseal.crypto import ContentKey, PrivateKey, generate_private_key
from modelseal.device import Component, DeviceFingerprint, Environment, StaticSource, collect

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

BASE = {
    "dmi.product_uuid": ("4c4c4544-0042-3510-8052-b3c04f4e3232", "strong", 3),
    "disk.root_serial": ("S4EWNX0N123456", "strong", 2),
    "net.mac": ("52:54:00:12:34:56", "strong", 2),
    "os.machine_id": ("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "weak", 1),
    "os.hostname": ("gpu-node-7", "weak", 1),
}


def make_device(
    changes: dict[str, str] | None = None,
    *,
    virtualization: str = "none",
    base: dict[str, tuple[str, str, int]] | None = None,
) -> DeviceFingerprint:
    comps = []
    for kind, (value, strength, weight) in (base or BASE).items():
        value = (changes or {}).get(kind, value)
        comps.append(Component(kind=kind, value=value, strength=strength, weight=weight))  # type: ignore[arg-type]
    env = Environment(virtualization=virtualization, details=(), platform="linux")  # type: ignore[arg-type]
    return collect(StaticSource(comps, env))


@pytest.fixture(scope="session")
def vendor_keys() -> dict[str, PrivateKey]:
    return {kty: generate_private_key(kty, rsa_bits=2048) for kty in ("ed25519", "rsa", "sm2")}


@pytest.fixture
def device() -> DeviceFingerprint:
    return make_device()


@pytest.fixture
def cek() -> ContentKey:
    return ContentKey(bytes(range(32)))


DeviceFactory = Callable[..., DeviceFingerprint]
