"""Values out of range are refused when a license is issued, and when one is verified.

Regression (issue #7): a 100,000-character customer name was issued, then
broke the device's audit log (``ValueError: audit record longer than 65536
bytes``) and ``modelseal.load(license=...)`` raised a ``ValueError``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import modelseal
from modelseal.crypto import PrivateKey, generate_private_key
from modelseal.errors import InvalidArgumentError, UnsupportedAlgorithmError
from modelseal.license import LicenseFormatError, TrustStore, issue_license, jws, verify_license
from modelseal.license.claims import LICENSE_TYP, MAX_NAME
from tests.license.conftest import NOW


@pytest.fixture(scope="module")
def vendor() -> PrivateKey:
    return generate_private_key("ed25519")


def _issue(vendor: PrivateKey, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "signing_key": vendor,
        "issuer": "acme",
        "customer": "ACME",
        "audience": ["acme/m"],
        "now": NOW,
    }
    args.update(kw)
    return issue_license(**args)


@pytest.mark.parametrize(
    "kw",
    [
        {"customer": "x" * 100_000},
        {"customer": ""},
        {"issuer": ""},
        {"issuer": "i" * (MAX_NAME + 1)},
        {"audience": ["a" * (MAX_NAME + 1)]},
        {"features": ["f" * 65]},
        {"max_calls": 0},
        {"max_devices": -3},
        {"valid_for": timedelta(days=0)},
        {"valid_for": timedelta(days=-5)},
        {"valid_for": timedelta(days=100_000_000)},
        {"heartbeat_url": "https://x", "heartbeat_interval": 0},
        {"grace": timedelta(seconds=-1)},
    ],
)
def test_out_of_range_values_are_refused_before_signing(vendor: PrivateKey, kw: Any) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        _issue(vendor, **kw)
    assert isinstance(info.value, ValueError) and info.value.exit_code == 2
    assert len(str(info.value)) < 500  # never echoes the oversized value


def test_an_algorithm_the_key_cannot_sign_is_refused(vendor: PrivateKey) -> None:
    for alg in ("RS256", "HS256", "none"):
        with pytest.raises(UnsupportedAlgorithmError):
            _issue(vendor, alg=alg)


def test_an_oversized_claim_signed_anyway_is_refused_on_the_device(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    claims = _issue(vendor).claims.model_dump(mode="json", exclude_none=True)
    claims["sub"] = "x" * 100_000
    token = jws.encode(
        claims, vendor, alg="EdDSA", headers={"typ": LICENSE_TYP, "kid": vendor.key_id}
    )
    trust = TrustStore([vendor.public_key()])
    with pytest.raises(LicenseFormatError):
        verify_license(token, trust, now=NOW)
    (tmp_path / "l.jwt").write_text(token)
    vendor.public_key().save(tmp_path / "v.pub")
    (tmp_path / "m.bin").write_bytes(b"weights")
    modelseal.seal(tmp_path / "m.bin", tmp_path / "m.mseal", model_id="acme/m")
    with pytest.raises(modelseal.ModelsealError):
        modelseal.load(
            tmp_path / "m.mseal",
            license=tmp_path / "l.jwt",
            trust=tmp_path / "v.pub",
            state_dir=tmp_path / "state",
        )


@pytest.mark.parametrize(
    ("virtualization", "option"), [("vm", "allow_vm"), ("container", "allow_container")]
)
def test_a_license_refusing_the_requests_own_environment_warns(
    vendor: PrivateKey, virtualization: str, option: str
) -> None:
    from modelseal.device import make_request
    from tests.license.conftest import make_device

    request = make_request(make_device(virtualization=virtualization), label="vm-host")
    issued = _issue(vendor, request=request, **{option: False})
    assert any("will not open on the requesting device" in w for w in issued.warnings)
    assert not any("requesting device" in w for w in _issue(vendor, request=request).warnings)


def test_an_already_expired_license_warns(vendor: PrivateKey) -> None:
    issued = _issue(vendor, not_before=NOW - timedelta(days=10), valid_for=timedelta(days=1))
    assert any("already expired" in w for w in issued.warnings)
