"""Rule: the KEK is rebuilt from whatever shares this device's components open
(docs/license.md, key delivery), whatever the shape of the device:

* a device that lost a component kind altogether (a removed NIC, no
  machine id) still opens the shares of the kinds it has, and so the keys
  while it stays above the threshold;
* a device with two components of one kind (two NICs, two disks) tries
  each of them on that kind's shares, not only the first;
* a share listed twice is skipped, not taken as the end of the list;
* the split takes exactly 1 <= k <= n <= 255 (x is one byte).

Found by mutation testing (tests/MUTATION.md, license/keydelivery.py):
``recover_kek`` could fail with a ``TypeError`` on a device without one of
the bound kinds, stop at the first wrong component of a kind, or stop at a
repeated share, and ``split_kek`` refuse k = 1 or n = 255 (or accept
n = 256), without a failing test.
"""

from __future__ import annotations

import pytest

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.device import Component, StaticSource, collect
from modelseal.license import (
    KeyDeliveryError,
    TrustStore,
    jws,
    open_content_key,
    read_unverified,
    verify_license,
)
from tests.license._helpers import issue
from tests.license.conftest import BASE, NOW, make_device


@pytest.fixture
def key(vendor_keys: dict[str, PrivateKey]) -> PrivateKey:
    return vendor_keys["ed25519"]


def test_a_device_without_a_bound_kind_still_opens(key: PrivateKey, cek: ContentKey) -> None:
    lic = verify_license(
        issue(key, make_device(), cek).token, TrustStore([key.public_key()]), now=NOW
    )
    # no hostname and no machine id at all: 7 of 9, threshold 6
    fewer = make_device(base={k: v for k, v in BASE.items() if not k.startswith("os.")})
    assert open_content_key(lic, fewer, cek.key_id) == cek


def test_each_component_of_a_kind_is_tried(key: PrivateKey, cek: ContentKey) -> None:
    lic = verify_license(
        issue(key, make_device(), cek).token, TrustStore([key.public_key()]), now=NOW
    )
    device = make_device()
    # a second NIC that sorts first: its secret opens none of the net.mac shares.
    # Without the disk, the bound NIC's 2 shares decide: 7 of 9 with them, 5 without.
    extra = Component(kind="net.mac", value="00:00:00:00:00:01", strength="strong", weight=2)
    no_disk = [c for c in device.components if c.kind != "disk.root_serial"]
    two_nics = collect(StaticSource([extra, *no_disk], device.environment))
    assert open_content_key(lic, two_nics, cek.key_id) == cek
    # the control: the second NIC alone does not open the NIC's shares
    only_extra = [extra, *(c for c in no_disk if c.kind != "net.mac")]
    with pytest.raises(KeyDeliveryError):
        open_content_key(lic, collect(StaticSource(only_extra, device.environment)), cek.key_id)


def test_a_repeated_share_is_skipped(key: PrivateKey, cek: ContentKey) -> None:
    token = issue(key, make_device(), cek).token
    claims = read_unverified(token)[1]
    shares = claims["keys"]["shares"]
    claims["keys"]["shares"] = [shares[0], *shares]  # the first share twice
    resigned = jws.encode(
        claims, key, alg="EdDSA", headers={"typ": "modelseal-license+jwt", "kid": key.key_id}
    )
    lic = verify_license(resigned, TrustStore([key.public_key()]), now=NOW)
    assert open_content_key(lic, make_device(), cek.key_id) == cek


def test_the_share_counts_spec_bounds() -> None:
    """docs/license.md: 1 <= threshold <= shares <= 255 (one byte of x per share)."""
    from modelseal.license.keydelivery import combine_kek, split_kek

    kek = bytes(range(32))
    one = split_kek(kek, 1, 1)  # threshold 1: any single share is the KEK
    assert combine_kek(one) == kek
    most = split_kek(kek, 2, 255)
    assert [x for x, _ in most] == list(range(1, 256))
    assert combine_kek(most[-2:]) == kek
    for threshold, count in ((0, 3), (4, 3), (2, 256), (1, 0)):
        with pytest.raises(ValueError, match="threshold"):
            split_kek(kek, threshold, count)
    with pytest.raises(ValueError, match="32 bytes"):
        split_kek(kek[:31], 1, 1)


def test_build_wraps_the_unlock_secret_and_names_each_models_key() -> None:
    """The issuer side of the ``keys`` claim: a (pre-v2) unlock secret is wrapped
    under the KEK, bound to the license id; each wrapped content key names its model."""
    from modelseal.license.keydelivery import ShareHolder, build, unwrap_unlock_secret

    kek, secret = bytes(range(32)), bytes(range(100, 132))
    cek = ContentKey(bytes(range(1, 33)))
    delivery = build(
        jti="lic_a",
        holders=[ShareHolder(kind="net.mac", secret=b"s" * 32, weight=1)],
        threshold=1,
        content_keys=[(cek, "acme/ocr")],
        unlock_secret=secret,
        kek=kek,
    )
    assert unwrap_unlock_secret(delivery, kek, jti="lic_a") == secret
    with pytest.raises(KeyDeliveryError):
        unwrap_unlock_secret(delivery, kek, jti="lic_b")
    assert [(c.key_id, c.model_id) for c in delivery.content_keys] == [(cek.key_id, "acme/ocr")]
    holders = [ShareHolder(kind="net.mac", secret=b"s" * 32, weight=1)]
    assert build(jti="x", holders=holders, threshold=1, content_keys=[]).unlock_secret is None
