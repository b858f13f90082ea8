"""Rule: ``allow_vm`` and ``allow_container`` are separate refusals, each
enforced on its own (docs/license.md, device binding). A license that
forbids containers is refused in a container, accepted on bare metal and in
a VM; and the other way round for VMs."""

from __future__ import annotations

import pytest

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.device import COMPONENT_KINDS
from modelseal.license import EnvironmentRefusedError, TrustStore, check_device, verify_license
from tests.license._helpers import issue
from tests.license.conftest import BASE, NOW, make_device


@pytest.mark.parametrize(
    ("allow_vm", "allow_container", "environment", "refused"),
    [
        (True, False, "container", True),
        (True, False, "none", False),
        (True, False, "vm", False),
        (False, True, "vm", True),
        (False, True, "container", False),
        (False, True, "none", False),
        (False, False, "container", True),
        (False, False, "vm", True),
        (False, False, "none", False),
        (True, True, "container", False),
        (True, True, "vm", False),
    ],
)
def test_environment_flags_are_each_enforced(
    vendor_keys: dict[str, PrivateKey],
    cek: ContentKey,
    allow_vm: bool,
    allow_container: bool,
    environment: str,
    refused: bool,
) -> None:
    key = vendor_keys["ed25519"]
    here = make_device(virtualization=environment)
    token = issue(key, here, cek, allow_vm=allow_vm, allow_container=allow_container).token
    trust = TrustStore([key.public_key()])
    unchecked = verify_license(token, trust, now=NOW)
    assert unchecked.claims.device is not None
    assert unchecked.claims.device.allow_container is allow_container
    assert unchecked.claims.device.allow_vm is allow_vm
    if refused:
        kind = "containers" if environment == "container" else "virtual machines"
        with pytest.raises(EnvironmentRefusedError, match=kind):
            verify_license(token, trust, now=NOW, fingerprint=here)
        with pytest.raises(EnvironmentRefusedError, match=kind):
            check_device(unchecked, here)
    else:
        lic = verify_license(token, trust, now=NOW, fingerprint=here)
        assert check_device(lic, here) == sum(COMPONENT_KINDS[kind].weight for kind in BASE)
