"""Heartbeat replies and revocation lists honour each trusted key's issuer pin.

Review finding: with two vendors' keys trusted, a key pinned to "beta" signed
a reply (and a revocation list) in "acme"'s name and the Guard's verifiers
accepted it, because the caller's expected issuer replaced the key's pin.
"""

from __future__ import annotations

import pytest

from modelseal.crypto import generate_private_key
from modelseal.license.heartbeat import (
    HeartbeatReplyError,
    HeartbeatVerdict,
    RevocationList,
    new_nonce,
    sign_reply,
    sign_revocations,
    verify_reply,
    verify_revocations,
)
from modelseal.license.trust import TrustedKey, TrustStore


@pytest.fixture
def keys() -> tuple[object, object, TrustStore]:
    acme, beta = generate_private_key("ed25519"), generate_private_key("ed25519")
    trust = TrustStore(
        [TrustedKey(acme.public_key(), issuer="acme"), TrustedKey(beta.public_key(), issuer="beta")]
    )
    return acme, beta, trust


def _reply(key: object, issuer: str, nonce: str) -> str:
    verdict = HeartbeatVerdict(
        code="VALID", server_time=4_000_000_000, license_id="lic_x", device_id="dev_x", nonce=nonce
    )
    return sign_reply(verdict, key, issuer=issuer)  # type: ignore[arg-type]


@pytest.mark.parametrize("expected", ["acme", None])
def test_a_reply_signed_in_another_vendors_name_is_refused(keys, expected) -> None:  # type: ignore[no-untyped-def]
    acme, beta, trust = keys
    nonce = new_nonce()
    with pytest.raises(HeartbeatReplyError, match="refused"):
        verify_reply(
            _reply(beta, "acme", nonce),
            trust,
            license_id="lic_x",
            device_id="dev_x",
            nonce=nonce,
            issuer=expected,
        )
    genuine = verify_reply(
        _reply(acme, "acme", nonce),
        trust,
        license_id="lic_x",
        device_id="dev_x",
        nonce=nonce,
        issuer=expected,
    )
    assert genuine.code == "VALID"


def test_a_revocation_list_signed_in_another_vendors_name_is_refused(keys) -> None:  # type: ignore[no-untyped-def]
    acme, beta, trust = keys
    forged = sign_revocations(RevocationList("acme", 0, 1, frozenset({"lic_x"}), frozenset()), beta)
    with pytest.raises(HeartbeatReplyError, match="refused"):
        verify_revocations(forged, trust, issuer="acme")
    revocations = RevocationList("acme", 0, 1, frozenset({"lic_x"}), frozenset())
    genuine = sign_revocations(revocations, acme)
    assert verify_revocations(genuine, trust, issuer="acme").licenses == frozenset({"lic_x"})
