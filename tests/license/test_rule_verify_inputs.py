"""Rules of ``verify_license`` that mutation testing found unchecked
(tests/MUTATION.md):

* ``kid`` and ``alg`` must BOTH be strings (either one wrong is a format
  error, even under a valid signature);
* ``audience`` may be a list: the license must cover at least one of them;
* the returned ``License`` carries the exact token and header it verified;
* a license without a device binding matches every device with weight 0;
* ``read_unverified`` (display only) reads the same claims the verifier
  does, whatever the base64url padding of each part.
"""

from __future__ import annotations

import base64
import json

import pytest

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.license import (
    FeatureNotLicensedError,
    LicenseFormatError,
    TrustStore,
    WrongAudienceError,
    check_device,
    issue_license,
    matched_weight,
    read_unverified,
    verify_license,
)
from tests.license._helpers import issue
from tests.license.conftest import NOW, make_device


@pytest.fixture
def key(vendor_keys: dict[str, PrivateKey]) -> PrivateKey:
    return vendor_keys["ed25519"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "fields", [{"kid": "KID", "alg": 7}, {"kid": "KID", "alg": None}, {"kid": 7, "alg": "EdDSA"}]
)
def test_kid_and_alg_must_both_be_strings(
    key: PrivateKey, cek: ContentKey, fields: dict[str, object]
) -> None:
    claims = read_unverified(issue(key, make_device(), cek).token)[1]
    fields = {k: (key.key_id if v == "KID" else v) for k, v in fields.items()}
    # signed by hand (PyJWT writes alg itself), so the header is exactly this one
    h = _b64(json.dumps({"typ": "modelseal-license+jwt", **fields}).encode())
    p = _b64(json.dumps(claims).encode())
    token = f"{h}.{p}.{_b64(key.sign(f'{h}.{p}'.encode()))}"
    with pytest.raises(LicenseFormatError, match=r"(?i)kid|key id"):  # ours or PyJWT's wording
        verify_license(token, TrustStore([key.public_key()]), now=NOW)


def test_a_list_of_audiences_needs_one_covered(key: PrivateKey, cek: ContentKey) -> None:
    token = issue(key, make_device(), cek, audience=["acme/ocr", "acme/asr"]).token
    trust = TrustStore([key.public_key()])
    assert verify_license(token, trust, now=NOW, audience=["other", "acme/asr"])
    assert verify_license(token, trust, now=NOW, audience=("acme/ocr",))
    with pytest.raises(WrongAudienceError, match="other, more"):
        verify_license(token, trust, now=NOW, audience=["other", "more"])
    with pytest.raises(WrongAudienceError):
        verify_license(token, trust, now=NOW, audience="acme")  # no prefix or substring match


def test_the_license_carries_what_was_verified(key: PrivateKey, cek: ContentKey) -> None:
    token = issue(key, make_device(), cek).token
    lic = verify_license("  " + token + "\n", TrustStore([key.public_key()]), now=NOW)
    assert lic.token == token
    assert lic.header == {"alg": "EdDSA", "kid": key.key_id, "typ": "modelseal-license+jwt"}
    assert lic.header == read_unverified(token)[0]


def test_an_unbound_license_matches_with_weight_zero(key: PrivateKey) -> None:
    token = issue_license(signing_key=key, issuer="i", customer="c", audience=["m"], now=NOW).token
    lic = verify_license(token, TrustStore([key.public_key()]), now=NOW)
    assert lic.claims.device is None
    anywhere = make_device({"dmi.product_uuid": "elsewhere"}, virtualization="container")
    assert matched_weight(lic, anywhere) == 0
    assert check_device(lic, anywhere) == 0
    assert verify_license(token, TrustStore([key.public_key()]), now=NOW, fingerprint=anywhere)


def test_read_unverified_reads_every_padding_like_the_verifier(key: PrivateKey) -> None:
    trust = TrustStore([key.public_key()])
    lengths = set()
    for n in range(1, 25):  # customer names of every length: every padding of every part
        token = issue_license(
            signing_key=key,
            issuer="i",
            customer="c" * n,
            audience=["m"],
            now=NOW,
            request=None,
        ).token
        header, claims = read_unverified(token)
        lic = verify_license(token, trust, now=NOW)
        assert (claims["sub"], claims["jti"], claims["exp"]) == (
            lic.customer,
            lic.license_id,
            lic.claims.exp,
        )
        assert header == lic.header
        lengths.add(len(token.split(".")[1]) % 4)
    assert lengths == {0, 2, 3}  # 1 is impossible in base64url


def test_require_feature_refuses_what_is_not_entitled(key: PrivateKey, cek: ContentKey) -> None:
    token = issue(key, make_device(), cek, features=["ocr", "hd"]).token
    lic = verify_license(token, TrustStore([key.public_key()]), now=NOW)
    lic.require_feature("ocr")
    lic.require_feature("hd")
    for missing in ("4k", "OCR", "", "ocr "):
        with pytest.raises(FeatureNotLicensedError, match="is not licensed"):
            lic.require_feature(missing)


@pytest.mark.parametrize(
    ("header", "claims"), [(b"[]", b"{}"), (b"{}", b"[]"), (b'"h"', b"{}"), (b"{}", b"1")]
)
def test_read_unverified_wants_two_objects(header: bytes, claims: bytes) -> None:
    with pytest.raises(LicenseFormatError, match="JSON objects"):
        read_unverified(f"{_b64(header)}.{_b64(claims)}.c2ln")
