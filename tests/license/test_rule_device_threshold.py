"""Rule: a device is accepted when its matched weight is AT LEAST the threshold
(docs/license.md, "k of the weighted components"): exactly k passes, k - 1 fails.

The Shamir key recovery enforces the same k independently; these tests go
through ``verify_license(fingerprint=...)`` and ``check_device``, the policy
check, so a ``>=`` turned into ``>`` there cannot hide behind the key maths.
"""

from __future__ import annotations

import pytest

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.license import (
    TrustStore,
    WrongDeviceError,
    check_device,
    matched_weight,
    open_content_key,
    verify_license,
)
from tests.license._helpers import issue
from tests.license.conftest import NOW, make_device

# conftest BASE weights: product_uuid 3, root_serial 3, mac 2, machine_id 1, hostname 1 (10)
EXACTLY_SIX = {"net.mac": "52:54:00:ff:ff:ff", "os.hostname": "renamed", "os.machine_id": "x"}
ONLY_FIVE = {"disk.root_serial": "NEWDISK", "net.mac": "52:54:00:ff:ff:ff"}


@pytest.fixture
def key(vendor_keys: dict[str, PrivateKey]) -> PrivateKey:
    return vendor_keys["ed25519"]


def test_weight_exactly_at_the_threshold_is_accepted(key: PrivateKey, cek: ContentKey) -> None:
    token = issue(key, make_device(), cek, threshold=6).token
    moved = make_device(EXACTLY_SIX)
    lic = verify_license(token, TrustStore([key.public_key()]), now=NOW, fingerprint=moved)
    assert matched_weight(lic, moved) == 6
    assert check_device(lic, moved) == 6
    assert open_content_key(lic, moved, cek.key_id) == cek


def test_weight_one_below_the_threshold_is_refused(key: PrivateKey, cek: ContentKey) -> None:
    token = issue(key, make_device(), cek, threshold=6).token
    trust = TrustStore([key.public_key()])
    moved = make_device(ONLY_FIVE)
    with pytest.raises(WrongDeviceError, match="weight 5 of the 6"):
        verify_license(token, trust, now=NOW, fingerprint=moved)
    lic = verify_license(token, trust, now=NOW)
    assert matched_weight(lic, moved) == 5
    with pytest.raises(WrongDeviceError):
        check_device(lic, moved)


ALL_BUT_HOSTNAME = {k: "changed" for k in ("dmi.product_uuid", "disk.root_serial", "net.mac")}


@pytest.mark.parametrize(
    ("threshold", "changes"),
    [
        (1, {**ALL_BUT_HOSTNAME, "os.machine_id": "changed"}),  # only the hostname (1) left
        (5, ONLY_FIVE),  # product_uuid 3 + machine_id 1 + hostname 1
        (10, {}),  # nothing may change
    ],
)
def test_every_threshold_is_inclusive(
    key: PrivateKey, cek: ContentKey, threshold: int, changes: dict[str, str]
) -> None:
    token = issue(key, make_device(), cek, threshold=threshold).token
    trust = TrustStore([key.public_key()])
    at_k = make_device(changes)
    lic = verify_license(token, trust, now=NOW, fingerprint=at_k)
    assert check_device(lic, at_k) == threshold
    if changes:  # one more component gone: refused
        first_kept = next(k for k in ("os.hostname", "dmi.product_uuid") if k not in changes)
        below = make_device({**changes, first_kept: "changed"})
        with pytest.raises(WrongDeviceError):
            verify_license(token, trust, now=NOW, fingerprint=below)
