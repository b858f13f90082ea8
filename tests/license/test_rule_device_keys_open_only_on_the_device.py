"""Rule: every key a license delivers (its content keys and the guard's state
key) opens on the bound device, also after tolerated hardware changes, and
on no other (docs/license.md, key delivery). The state key is bound to the
license id. (Since unlock codes v2 a license carries no unlock secret.)

Found by mutation testing (tests/MUTATION.md): ``open_state_key`` had no
test in tests/license, only indirect use by the guard.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.license import (
    KeyDeliveryError,
    TrustStore,
    jws,
    open_content_key,
    open_state_key,
    open_unlock_secret,
    read_unverified,
    verify_license,
)
from modelseal.license.verify import license_kek
from tests.license._helpers import issue
from tests.license.conftest import NOW, make_device

TOLERATED = {"os.hostname": "renamed", "disk.root_serial": "NEWDISK"}  # 6 of 9 left, k = 6
TOO_MUCH = {"disk.root_serial": "NEWDISK", "net.mac": "52:54:00:ff:ff:ff"}  # 5 of 9 left


@pytest.fixture
def key(vendor_keys: dict[str, PrivateKey]) -> PrivateKey:
    return vendor_keys["ed25519"]


def test_every_delivered_key_opens_on_the_device(key: PrivateKey, cek: ContentKey) -> None:
    issued = issue(key, make_device(), cek)
    lic = verify_license(issued.token, TrustStore([key.public_key()]), now=NOW)
    for device in (make_device(), make_device(TOLERATED)):
        assert open_content_key(lic, device, cek.key_id) == cek
        state = open_state_key(lic, device)
        assert len(state) == 32 and state == open_state_key(lic, make_device())


def test_no_delivered_key_opens_elsewhere(key: PrivateKey, cek: ContentKey) -> None:
    lic = verify_license(
        issue(key, make_device(), cek).token, TrustStore([key.public_key()]), now=NOW
    )
    moved = make_device(TOO_MUCH)
    with pytest.raises(KeyDeliveryError):
        open_content_key(lic, moved, cek.key_id)
    with pytest.raises(KeyDeliveryError):
        open_state_key(lic, moved)


def test_the_state_key_is_the_specified_hkdf(key: PrivateKey, cek: ContentKey) -> None:
    # docs/license.md: HKDF-SHA256(KEK, salt = "", info = "modelseal/license/v1/state/" || jti)
    device = make_device()
    lic = verify_license(issue(key, device, cek).token, TrustStore([key.public_key()]), now=NOW)
    info = b"modelseal/license/v1/state/" + lic.license_id.encode()
    expected = HKDF(hashes.SHA256(), length=32, salt=b"", info=info).derive(
        license_kek(lic, device)
    )
    assert open_state_key(lic, device) == expected


def test_state_keys_differ_between_licenses(key: PrivateKey, cek: ContentKey) -> None:
    trust = TrustStore([key.public_key()])
    device = make_device()
    a = verify_license(issue(key, device, cek).token, trust, now=NOW)
    b = verify_license(issue(key, device, cek).token, trust, now=NOW)
    assert a.license_id != b.license_id
    assert open_state_key(a, device) != open_state_key(b, device)


def test_an_unknown_content_key_is_refused(key: PrivateKey, cek: ContentKey) -> None:
    lic = verify_license(
        issue(key, make_device(), cek).token, TrustStore([key.public_key()]), now=NOW
    )
    other = ContentKey(bytes(range(1, 33)))
    with pytest.raises(KeyDeliveryError, match="no content key"):
        open_content_key(lic, make_device(), other.key_id)


def test_a_bound_license_without_keys_delivers_none(key: PrivateKey, cek: ContentKey) -> None:
    # issue_license always adds keys to a bound license; one signed without them
    # (another issuer, an older tool) must refuse key requests with a typed error
    claims = read_unverified(issue(key, make_device(), cek).token)[1]
    del claims["keys"]
    token = jws.encode(
        claims, key, alg="EdDSA", headers={"typ": "modelseal-license+jwt", "kid": key.key_id}
    )
    lic = verify_license(token, TrustStore([key.public_key()]), now=NOW, fingerprint=make_device())
    for action in (
        lambda: open_content_key(lic, make_device(), cek.key_id),
        lambda: open_unlock_secret(lic, make_device()),
        lambda: open_state_key(lic, make_device()),
    ):
        with pytest.raises(KeyDeliveryError, match="delivers no keys"):
            action()
