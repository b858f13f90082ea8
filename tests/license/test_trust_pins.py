"""Issue #8 item 12: a trusted key signs only for the issuer it is pinned to.

The attack: with two vendors' keys trusted, vendor B's key signed a license
whose ``iss`` is vendor A, and it verified as A's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.crypto import PrivateKey, generate_private_key
from modelseal.errors import KeyFileError
from modelseal.license import (
    TrustedKey,
    TrustStore,
    WrongIssuerError,
    issue_license,
    load_trust_file,
    parse_trust_entry,
    trust_file_entry,
    verify_license,
)

from .conftest import NOW


@pytest.fixture
def two_vendors(vendor_keys, tmp_path: Path) -> tuple[PrivateKey, PrivateKey, Path, Path]:  # type: ignore[no-untyped-def]
    a, b = vendor_keys["ed25519"], vendor_keys["sm2"]
    a.public_key().save(tmp_path / "a.pub")
    b.public_key().save(tmp_path / "b.pub")
    return a, b, tmp_path / "a.pub", tmp_path / "b.pub"


def _token(key: PrivateKey, issuer: str) -> str:
    return issue_license(
        signing_key=key,
        issuer=issuer,
        customer="ACME",
        audience=["acme/ocr"],
        now=NOW,
        valid_for=timedelta(days=30),
        features=["hd"],
    ).token


def test_a_pinned_key_cannot_sign_in_another_vendors_name(two_vendors) -> None:  # type: ignore[no-untyped-def]
    a, b, a_pub, b_pub = two_vendors
    store = TrustStore.load(f"vendor-a={a_pub}", f"vendor-b={b_pub}")
    forged = _token(b, "vendor-a")
    with pytest.raises(WrongIssuerError):
        verify_license(forged, store, now=NOW)
    # the caller's expectation never widens a pin (it used to replace it)
    with pytest.raises(WrongIssuerError):
        verify_license(forged, store, now=NOW, issuer="vendor-a")
    assert verify_license(_token(a, "vendor-a"), store, now=NOW).claims.iss == "vendor-a"
    assert verify_license(_token(b, "vendor-b"), store, now=NOW).claims.iss == "vendor-b"
    with pytest.raises(WrongIssuerError):
        verify_license(_token(a, "vendor-a"), store, now=NOW, issuer="vendor-b")


def test_an_unpinned_key_cannot_claim_a_pinned_issuer(two_vendors) -> None:  # type: ignore[no-untyped-def]
    _a, b, a_pub, b_pub = two_vendors
    store = TrustStore.load(f"vendor-a={a_pub}", b_pub)
    with pytest.raises(WrongIssuerError):
        verify_license(_token(b, "vendor-a"), store, now=NOW)
    # unpinned keys still verify names nobody pinned (one vendor, several keys)
    assert verify_license(_token(b, "vendor-b"), store, now=NOW).claims.iss == "vendor-b"


def test_trust_files_pin_any_issuer(two_vendors, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b, _, _ = two_vendors
    url_a, url_b = "https://a.example:8443/", "https://b.example/"
    doc = {
        "modelseal_trust": 1,
        "keys": [
            trust_file_entry(a.public_key(), url_a, alg="EdDSA"),
            trust_file_entry(b.public_key(), url_b),
        ],
    }
    (tmp_path / "vendors.json").write_text(json.dumps(doc))
    store = TrustStore.load(tmp_path / "vendors.json")
    assert {e.issuer for e in store} == {url_a, url_b}
    with pytest.raises(WrongIssuerError):
        verify_license(_token(b, url_a), store, now=NOW)
    assert verify_license(_token(a, url_a), store, now=NOW).claims.iss == url_a
    # a directory reads its trust files too, and a conflicting pin of one key is refused
    (tmp_path / "extra.pub").write_bytes(a.public_key().to_pem())
    with pytest.raises(KeyFileError, match="one key, one issuer"):
        TrustStore.load(tmp_path)


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"modelseal_trust": 1},
        {"modelseal_trust": 2, "keys": []},
        {"modelseal_trust": True, "keys": [{"issuer": "x", "public_key": "p"}]},
        {"modelseal_trust": 1, "keys": []},
        {"modelseal_trust": 1, "keys": [{"public_key": "PEM"}]},
        {"modelseal_trust": 1, "keys": [{"issuer": "", "public_key": "PEM"}]},
        {"modelseal_trust": 1, "keys": [{"issuer": "x", "public_key": 5}]},
        {"modelseal_trust": 1, "keys": [{"issuer": "x", "public_key": "PEM", "kid": "y"}]},
        {"modelseal_trust": 1, "keys": [{"issuer": "x", "public_key": "not a pem"}]},
    ],
)
def test_malformed_trust_files_are_refused(tmp_path: Path, doc: object) -> None:
    (tmp_path / "t.json").write_text(json.dumps(doc))
    with pytest.raises(KeyFileError):
        TrustStore.load(tmp_path / "t.json")
    (tmp_path / "dup.json").write_text('{"modelseal_trust": 1, "modelseal_trust": 1, "keys": []}')
    with pytest.raises(KeyFileError):
        TrustStore.load(tmp_path / "dup.json")


def test_trust_entry_syntax() -> None:
    assert parse_trust_entry("acme=keys/v.pub") == ("acme", Path("keys/v.pub"))
    assert parse_trust_entry("/etc/keys/a=b.pub") == (None, Path("/etc/keys/a=b.pub"))
    assert parse_trust_entry("./a=b.pub") == (None, Path("./a=b.pub"))
    assert parse_trust_entry(Path("v.pub")) == (None, Path("v.pub"))
    with pytest.raises(KeyFileError):
        parse_trust_entry("acme=")
    with pytest.raises(ValueError, match="cannot be used"):
        TrustStore([TrustedKey(generate_private_key("ed25519").public_key(), alg="RS256")])


def test_modelseal_trust_pins_through_the_guard(two_vendors, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from modelseal.guard import Guard

    _a, b, a_pub, b_pub = two_vendors
    (tmp_path / "forged.jwt").write_text(_token(b, "vendor-a"))
    monkeypatch.setenv("MODELSEAL_LICENSE", str(tmp_path / "forged.jwt"))
    monkeypatch.setenv(
        "MODELSEAL_TRUST", os.pathsep.join([f"vendor-a={a_pub}", f"vendor-b={b_pub}"])
    )
    monkeypatch.setenv("MODELSEAL_STATE_DIR", str(tmp_path / "state"))
    from modelseal.guard import NotLicensedError

    with pytest.raises(NotLicensedError) as refused:
        Guard.from_env(audience="acme/ocr")
    assert refused.value.reason == "wrong_issuer"


def test_cli_verify_refuses_the_cross_signed_license(two_vendors, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _a, b, a_pub, b_pub = two_vendors
    (tmp_path / "forged.jwt").write_text(_token(b, "vendor-a"))
    base = [
        sys.executable,
        "-m",
        "modelseal.cli",
        "license",
        "verify",
        str(tmp_path / "forged.jwt"),
    ]
    pinned = ["--trust", f"vendor-a={a_pub}", "--trust", f"vendor-b={b_pub}"]
    r = subprocess.run([*base, *pinned], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 14, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        _json_values,
        st.fixed_dictionaries(
            {"modelseal_trust": st.sampled_from([1, 1, 2, True, "1"]), "keys": _json_values}
        ),
        st.fixed_dictionaries(
            {
                "modelseal_trust": st.just(1),
                "keys": st.lists(
                    st.dictionaries(
                        st.sampled_from(["issuer", "public_key", "alg", "kid"]),
                        _json_values,
                        max_size=4,
                    ),
                    max_size=2,
                ),
            }
        ),
    )
)
def test_any_json_is_a_trust_file_or_a_key_file_error(tmp_path_factory, doc: object) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("trust") / "t.json"
    path.write_text(json.dumps(doc))
    try:
        entries = load_trust_file(path)
    except KeyFileError:
        return
    assert entries and all(e.issuer for e in entries)


def test_cli_verify_of_an_unbound_perpetual_license_prints_its_claims(
    two_vendors, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Found while testing pins: a license without a device binding crashed the table."""
    a, _, a_pub, _ = two_vendors
    token = issue_license(
        signing_key=a, issuer="vendor-a", customer="ACME", audience=["p"], plan="perpetual"
    ).token
    (tmp_path / "l.jwt").write_text(token)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelseal.cli",
            "license",
            "verify",
            str(tmp_path / "l.jwt"),
            "--trust",
            f"vendor-a={a_pub}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "vendor-a" in r.stdout
