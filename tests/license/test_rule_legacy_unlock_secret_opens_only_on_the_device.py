"""Rule: a license issued before unlock codes v2 may carry a wrapped
``unlock_secret`` (docs/license.md, key delivery: still parsed, no longer
issued). ``open_unlock_secret`` (public API) opens it on the bound device,
also after tolerated hardware changes, and on no other; the wrapping is
bound to the license id, so a secret moved into another license does not
open.

Found by mutation testing (tests/MUTATION.md, license/verify.py): since v2
no test license carries the claim, so dropping the fingerprint, the
delivery or the license id from ``open_unlock_secret`` went unnoticed.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelseal.crypto import ContentKey, PrivateKey, b64url, new_aead
from modelseal.license import (
    KeyDeliveryError,
    TrustStore,
    jws,
    open_unlock_secret,
    read_unverified,
    verify_license,
)
from modelseal.license.verify import license_kek
from tests.license._helpers import issue
from tests.license.conftest import NOW, make_device

TOLERATED = {"os.hostname": "renamed", "disk.root_serial": "NEWDISK"}  # 6 of 9 left, k = 6
TOO_MUCH = {"disk.root_serial": "NEWDISK", "net.mac": "52:54:00:ff:ff:ff"}  # 5 of 9 left
SECRET = bytes(range(32))
AAD = b"modelseal/license/v1/unlock/"  # docs/license.md: AAD of the wrapped unlock secret


@pytest.fixture
def key(vendor_keys: dict[str, PrivateKey]) -> PrivateKey:
    return vendor_keys["ed25519"]


def _legacy(key: PrivateKey, cek: ContentKey, *, wrapped_for: str | None = None) -> Any:
    """A bound license whose ``keys`` also carry ``SECRET``, wrapped as v1 issuers did."""
    trust = TrustStore([key.public_key()])
    claims = read_unverified(issue(key, make_device(), cek).token)[1]
    kek = license_kek(verify_license(issue_token(key, claims), trust, now=NOW), make_device())
    jti = wrapped_for or claims["jti"]
    blob = new_aead("aes-256-gcm", kek).seal_random(SECRET, AAD + jti.encode())
    claims["keys"]["unlock_secret"] = b64url(blob)
    return verify_license(issue_token(key, claims), trust, now=NOW)


def issue_token(key: PrivateKey, claims: dict[str, Any]) -> str:
    headers = {"typ": "modelseal-license+jwt", "kid": key.key_id}
    return jws.encode(claims, key, alg="EdDSA", headers=headers)


def test_the_legacy_unlock_secret_opens_on_the_bound_device(
    key: PrivateKey, cek: ContentKey
) -> None:
    lic = _legacy(key, cek)
    assert open_unlock_secret(lic, make_device()) == SECRET
    assert open_unlock_secret(lic, make_device(TOLERATED)) == SECRET


def test_the_legacy_unlock_secret_opens_nowhere_else(key: PrivateKey, cek: ContentKey) -> None:
    with pytest.raises(KeyDeliveryError):
        open_unlock_secret(_legacy(key, cek), make_device(TOO_MUCH))


def test_the_legacy_unlock_secret_is_bound_to_its_license_id(
    key: PrivateKey, cek: ContentKey
) -> None:
    with pytest.raises(KeyDeliveryError):
        open_unlock_secret(_legacy(key, cek, wrapped_for="lic_another"), make_device())


def test_a_v2_license_has_no_unlock_secret_to_open(key: PrivateKey, cek: ContentKey) -> None:
    lic = verify_license(
        issue(key, make_device(), cek).token, TrustStore([key.public_key()]), now=NOW
    )
    with pytest.raises(KeyDeliveryError, match="no unlock secret"):
        open_unlock_secret(lic, make_device())
