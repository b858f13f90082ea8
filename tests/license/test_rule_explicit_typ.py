"""Rule: a license's JWS header must say ``typ: modelseal-license+jwt``
(RFC 8725 §3.11), so another JWT the vendor's key signs (an access token, a
webhook) can never be replayed as a license. These tokens are signed
properly by the trusted key with valid claims: the ``typ`` rule alone
refuses them."""

from __future__ import annotations

import pytest

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.license import (
    LICENSE_TYP,
    LicenseFormatError,
    TrustStore,
    jws,
    read_unverified,
    verify_license,
)
from tests.license._helpers import issue
from tests.license.conftest import NOW, make_device


@pytest.mark.parametrize("kty_alg", [("ed25519", "EdDSA"), ("rsa", "PS256"), ("sm2", "SM2")])
@pytest.mark.parametrize(
    "typ", ["JWT", "at+jwt", "modelseal-license", LICENSE_TYP.upper(), LICENSE_TYP + " ", None]
)
def test_properly_signed_token_with_another_typ_is_refused(
    vendor_keys: dict[str, PrivateKey], cek: ContentKey, kty_alg: tuple[str, str], typ: str | None
) -> None:
    kty, alg = kty_alg
    key = vendor_keys[kty]
    trust = TrustStore([key.public_key()])
    genuine = issue(key, make_device(), cek, alg=alg).token
    claims = read_unverified(genuine)[1]
    headers = {"kid": key.key_id, "typ": typ}  # PyJWT drops a typ of None
    resigned = jws.encode(claims, key, alg=alg, headers=headers)
    # the same claims under the right typ, signed the same way, verify: so
    # nothing but typ differs between the accepted and the refused token
    control = jws.encode(claims, key, alg=alg, headers={"kid": key.key_id, "typ": LICENSE_TYP})
    assert verify_license(control, trust, now=NOW).claims.jti == claims["jti"]
    header = read_unverified(resigned)[0]
    assert header.get("typ") == typ and header["alg"] == alg
    with pytest.raises(LicenseFormatError, match="typ must be"):
        verify_license(resigned, trust, now=NOW)
