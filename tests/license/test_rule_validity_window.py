"""Rule: a license is valid on ``[nbf - leeway, exp + leeway)`` (RFC 7519
§4.1.4/§4.1.5: "on or after exp" is expired; leeway absorbs clock skew,
RFC 8725 §3.10). Checked at each edge to the second, with the default
leeway, a custom one and none, so an off-by-one or a dropped leeway fails."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.license import (
    LicenseExpiredError,
    LicenseNotYetValidError,
    TrustStore,
    read_unverified,
    verify_license,
)
from modelseal.license.verify import DEFAULT_LEEWAY
from tests.license._helpers import issue
from tests.license.conftest import NOW, make_device

NBF = NOW + timedelta(days=1)
EXP = NBF + timedelta(days=30)
SECOND = timedelta(seconds=1)


@pytest.fixture(scope="module")
def signed(vendor_keys: dict[str, PrivateKey]) -> tuple[str, TrustStore]:
    key = vendor_keys["ed25519"]
    token = issue(key, make_device(), ContentKey(bytes(32)), not_before=NBF).token
    claims = read_unverified(token)[1]
    assert (claims["nbf"], claims["exp"]) == (int(NBF.timestamp()), int(EXP.timestamp()))
    return token, TrustStore([key.public_key()])


def test_default_leeway_is_sixty_seconds() -> None:
    assert timedelta(seconds=60) == DEFAULT_LEEWAY


@pytest.mark.parametrize("leeway", [timedelta(0), SECOND, DEFAULT_LEEWAY, timedelta(minutes=5)])
def test_expiry_edge_with_leeway(signed: tuple[str, TrustStore], leeway: timedelta) -> None:
    token, trust = signed
    last_valid = EXP + leeway - SECOND
    verify_license(token, trust, now=last_valid, leeway=leeway)
    with pytest.raises(LicenseExpiredError):
        verify_license(token, trust, now=EXP + leeway, leeway=leeway)


def test_expiry_at_exactly_exp_without_leeway(signed: tuple[str, TrustStore]) -> None:
    token, trust = signed
    verify_license(token, trust, now=EXP - SECOND, leeway=timedelta(0))
    with pytest.raises(LicenseExpiredError):
        verify_license(token, trust, now=EXP, leeway=timedelta(0))


def test_default_leeway_applies_to_expiry(signed: tuple[str, TrustStore]) -> None:
    token, trust = signed
    verify_license(token, trust, now=EXP)  # expired by the clock, inside the leeway
    verify_license(token, trust, now=EXP + DEFAULT_LEEWAY - SECOND)
    with pytest.raises(LicenseExpiredError):
        verify_license(token, trust, now=EXP + DEFAULT_LEEWAY)


@pytest.mark.parametrize("leeway", [timedelta(0), DEFAULT_LEEWAY])
def test_not_before_edge_with_leeway(signed: tuple[str, TrustStore], leeway: timedelta) -> None:
    token, trust = signed
    verify_license(token, trust, now=NBF - leeway, leeway=leeway)
    with pytest.raises(LicenseNotYetValidError):
        verify_license(token, trust, now=NBF - leeway - SECOND, leeway=leeway)


def test_fractional_seconds_do_not_move_the_edges(signed: tuple[str, TrustStore]) -> None:
    token, trust = signed
    half = timedelta(milliseconds=500)
    verify_license(token, trust, now=EXP - half, leeway=timedelta(0))
    with pytest.raises(LicenseExpiredError):
        verify_license(token, trust, now=EXP + half, leeway=timedelta(0))
