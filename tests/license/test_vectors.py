"""tests/vectors/license-v1.json pins the license construction (docs/license.md)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modelseal.crypto import b64url, b64url_decode, load_public_key
from modelseal.device import (
    Component,
    Environment,
    StaticSource,
    collect,
    component_digest,
    component_secret,
)
from modelseal.license import KeyDeliveryError, TrustStore, open_content_key, verify_license
from modelseal.license.keydelivery import _share_key
from tests.conftest import load_vectors

V = load_vectors("license-v1.json")


def _device(values: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    comps = [
        Component(
            kind=c["kind"],
            value=(values or {}).get(c["kind"], c["value"]),
            strength=c["strength"],
            weight=c["weight"],
        )
        for c in V["components"]
    ]
    return collect(
        StaticSource(comps, Environment(virtualization="none", details=(), platform="linux"))
    )


def test_digests_secrets_and_share_keys() -> None:
    salt = b64url_decode(V["request_salt"])
    by_kind = {c["kind"]: c for c in V["request_components"]}
    assert set(by_kind) == {c["kind"] for c in V["components"]}
    for comp in V["components"]:
        expected = by_kind[comp["kind"]]
        assert component_digest(salt, comp["kind"], comp["value"]) == expected["digest"]
        assert component_secret(salt, comp["kind"], comp["value"]) == expected["secret"]
    trust = TrustStore([load_public_key(V["vendor_public_key_pem"].encode())])
    now = datetime.fromtimestamp(V["now"], UTC)
    lic = verify_license(V["license"], trust, now=now, audience="vector/model")
    assert lic.claims.keys is not None
    delivery_salt = b64url_decode(lic.claims.keys.salt)
    for comp in V["request_components"]:
        key = _share_key(b64url_decode(comp["secret"]), delivery_salt, lic.claims.jti, comp["kind"])
        assert b64url(key) == V["share_keys"][comp["kind"]]


def test_the_vector_device_opens_the_content_key_and_others_do_not() -> None:
    trust = TrustStore([load_public_key(V["vendor_public_key_pem"].encode())])
    lic = verify_license(V["license"], trust, now=datetime.fromtimestamp(V["now"], UTC))
    ck = open_content_key(lic, _device(), V["content_key_id"])
    assert b64url(ck.raw()) == V["content_key"]
    # total weight 9, threshold 6: changing weight 3 is tolerated, weight 4 is not
    assert open_content_key(lic, _device({"dmi.product_uuid": "new"}), V["content_key_id"]) == ck
    with pytest.raises(KeyDeliveryError):
        open_content_key(
            lic, _device({"dmi.product_uuid": "new", "os.hostname": "new"}), V["content_key_id"]
        )
