"""Issue #8 item 15: one license, one string. Non-canonical base64url is refused.

A license's signature segment still verified with ``=`` padding appended, so
one signed license had several spellings (and a revocation list, cache or
audit record keyed on the token could be dodged by re-spelling it).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.crypto import PrivateKey
from modelseal.license import LicenseFormatError, TrustStore, issue_license, verify_license

from .conftest import NOW


def _token(key: PrivateKey) -> str:
    return issue_license(
        signing_key=key,
        issuer="acme",
        customer="c",
        audience=["acme/ocr"],
        now=NOW,
        valid_for=timedelta(days=1),
    ).token


def _respell(segment: str, how: str) -> str:
    if how == "pad":
        return segment + "=" * (-len(segment) % 4 or 2)
    if how == "pad2":
        return segment + "=="
    if how == "bits":
        # flip an unused trailing bit: decoders ignore it, the bytes stay the same
        last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        unused = {2: 4, 3: 2}.get(len(segment) % 4, 0)
        if not unused:
            # a length of 0 mod 4 has no unused bits: the one other spelling is padding
            return segment + "=="
        index = last.index(segment[-1])
        return segment[:-1] + last[index | 1]
    if how == "std":
        return segment.replace("-", "+").replace("_", "/")
    raise AssertionError(how)


@pytest.mark.parametrize("kty", ["ed25519", "rsa", "sm2"])
@pytest.mark.parametrize("part", [0, 1, 2])
@pytest.mark.parametrize("how", ["pad", "pad2", "bits"])
def test_respelled_licenses_are_refused(vendor_keys, kty: str, part: int, how: str) -> None:  # type: ignore[no-untyped-def]
    key = vendor_keys[kty]
    token = _token(key)
    trust = TrustStore([key.public_key()])
    assert verify_license(token, trust, now=NOW).token == token
    parts = token.split(".")
    parts[part] = _respell(parts[part], how)
    respelled = ".".join(parts)
    assert respelled != token
    with pytest.raises(LicenseFormatError):
        verify_license(respelled, trust, now=NOW)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2), st.text(alphabet="=+/ .\n\t!", min_size=1, max_size=3), st.integers(0, 400)
)
def test_any_foreign_character_is_refused(vendor_keys, part: int, junk: str, where: int) -> None:  # type: ignore[no-untyped-def]
    key = vendor_keys["ed25519"]
    token = _token(key)
    parts = token.split(".")
    segment = parts[part]
    at = where % (len(segment) + 1)
    parts[part] = segment[:at] + junk + segment[at:]
    mangled = ".".join(parts)
    if mangled.strip() == token:
        return  # leading/trailing whitespace around the whole token is stripped by design
    with pytest.raises(LicenseFormatError):
        verify_license(mangled, TrustStore([key.public_key()]), now=NOW)
