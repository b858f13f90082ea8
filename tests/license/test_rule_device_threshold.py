"""Rule: a device is accepted when its matched weight is AT LEAST the threshold
(docs/license.md, "k of the weighted components"): exactly k passes, k - 1 fails.

The Shamir key recovery enforces the same k independently; these tests go
through ``verify_license(fingerprint=...)`` and ``check_device``, the policy
check, so a ``>=`` turned into ``>`` there cannot hide behind the key maths.
Weights are the issuer's (``COMPONENT_KINDS``), never the request's labels.
"""

from __future__ import annotations

import pytest

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.device import COMPONENT_KINDS
from modelseal.license import (
    TrustStore,
    WrongDeviceError,
    check_device,
    matched_weight,
    open_content_key,
    verify_license,
)
from tests.license._helpers import issue
from tests.license.conftest import BASE, NOW, make_device

WEIGHT = {kind: COMPONENT_KINDS[kind].weight for kind in BASE}
TOTAL = sum(WEIGHT.values())
# strongest first, so "keep these" sets reach every threshold from the top down
ORDER = sorted(BASE, key=lambda kind: -WEIGHT[kind])


def _changed(except_: list[str]) -> dict[str, str]:
    return {kind: "changed" for kind in BASE if kind not in except_}


@pytest.fixture
def key(vendor_keys: dict[str, PrivateKey]) -> PrivateKey:
    return vendor_keys["ed25519"]


def test_weight_exactly_at_the_threshold_is_accepted(key: PrivateKey, cek: ContentKey) -> None:
    kept = ORDER[:2]  # the two strongest components stay, all others change
    k = WEIGHT[kept[0]] + WEIGHT[kept[1]]
    token = issue(key, make_device(), cek, threshold=k).token
    moved = make_device(_changed(kept))
    lic = verify_license(token, TrustStore([key.public_key()]), now=NOW, fingerprint=moved)
    assert matched_weight(lic, moved) == k
    assert check_device(lic, moved) == k
    assert open_content_key(lic, moved, cek.key_id) == cek


def test_weight_one_component_below_the_threshold_is_refused(
    key: PrivateKey, cek: ContentKey
) -> None:
    kept = ORDER[:2]
    k = WEIGHT[kept[0]] + WEIGHT[kept[1]]
    token = issue(key, make_device(), cek, threshold=k).token
    trust = TrustStore([key.public_key()])
    moved = make_device(_changed(kept[:1]))
    below = WEIGHT[kept[0]]
    with pytest.raises(WrongDeviceError, match=f"weight {below} of the {k}"):
        verify_license(token, trust, now=NOW, fingerprint=moved)
    lic = verify_license(token, trust, now=NOW)
    assert matched_weight(lic, moved) == below
    with pytest.raises(WrongDeviceError):
        check_device(lic, moved)


@pytest.mark.parametrize("kept", [ORDER[:n] for n in range(1, len(ORDER) + 1)])
def test_every_threshold_is_inclusive(key: PrivateKey, cek: ContentKey, kept: list[str]) -> None:
    k = sum(WEIGHT[kind] for kind in kept)
    token = issue(key, make_device(), cek, threshold=k).token
    trust = TrustStore([key.public_key()])
    at_k = make_device(_changed(kept))
    lic = verify_license(token, trust, now=NOW, fingerprint=at_k)
    assert check_device(lic, at_k) == k
    if k < TOTAL:
        assert check_device(lic, make_device()) == TOTAL
    below = make_device(_changed(kept[:-1]))  # the weakest kept one changes too
    with pytest.raises(WrongDeviceError):
        verify_license(token, trust, now=NOW, fingerprint=below)
