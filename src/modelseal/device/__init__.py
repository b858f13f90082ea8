"""Device fingerprints for license binding (docs/device.md).

``collect()`` reads this machine's components (firmware UUID, disk serial,
NIC addresses, GPU UUIDs, Kubernetes cluster uid, and weak ones: CPU model,
machine-id, hostname) and describes its environment (bare metal, VM,
container). ``make_request()`` turns a fingerprint into an activation
request that carries only salted HMACs of the values. Linux is the
supported platform; macOS and Windows sources are best-effort.
"""

from modelseal.device.collect import collect, default_source
from modelseal.device.darwin import MacSource
from modelseal.device.errors import (
    DeviceError,
    InvalidLabelError,
    NoComponentsError,
    RequestFormatError,
    UnsupportedPlatformError,
    UnsupportedRequestVersionError,
)
from modelseal.device.fingerprint import (
    COMPONENT_KINDS,
    BindingStrength,
    Component,
    DeviceFingerprint,
    Environment,
    FingerprintSource,
    KindInfo,
    StaticSource,
    Strength,
    Virtualization,
)
from modelseal.device.linux import LinuxSource
from modelseal.device.request import (
    REQUEST_VERSION,
    ActivationRequest,
    RequestComponent,
    component_digest,
    component_secret,
    make_request,
)
from modelseal.device.windows import WindowsSource

__all__ = [
    "COMPONENT_KINDS",
    "REQUEST_VERSION",
    "ActivationRequest",
    "BindingStrength",
    "Component",
    "DeviceError",
    "DeviceFingerprint",
    "Environment",
    "FingerprintSource",
    "InvalidLabelError",
    "KindInfo",
    "LinuxSource",
    "MacSource",
    "NoComponentsError",
    "RequestComponent",
    "RequestFormatError",
    "StaticSource",
    "Strength",
    "UnsupportedPlatformError",
    "UnsupportedRequestVersionError",
    "Virtualization",
    "WindowsSource",
    "collect",
    "component_digest",
    "component_secret",
    "default_source",
    "make_request",
]
