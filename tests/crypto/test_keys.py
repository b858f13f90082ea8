from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from modelseal.crypto import (
    ContentKey,
    generate_private_key,
    jwk_thumbprint,
    load_private_key,
    load_public_key,
)
from modelseal.errors import (
    InvalidSignatureError,
    KeyFileError,
    UnsupportedAlgorithmError,
)


def test_rfc7638_thumbprint_example() -> None:
    # RFC 7638 section 3.1
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
        "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWh"
        "AI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    assert jwk_thumbprint({"e": "AQAB", "kty": "RSA", "n": n}) == (
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    )


@pytest.mark.parametrize("kty", ["ed25519", "rsa", "sm2"])
def test_generate_save_load_sign_verify(tmp_path: Path, kty: str) -> None:
    key = generate_private_key(kty, rsa_bits=2048)
    key.save(tmp_path / "k.pem")
    key.save(tmp_path / "k.enc.pem", passphrase="s3cret")
    key.public_key().save(tmp_path / "k.pub")
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    loaded = load_private_key(tmp_path / "k.pem")
    loaded_enc = load_private_key(tmp_path / "k.enc.pem", "s3cret")
    public = load_public_key(tmp_path / "k.pub")
    assert loaded.key_id == loaded_enc.key_id == public.key_id == key.key_id
    for alg in key.algorithms:
        sig = loaded_enc.sign(b"message", alg=alg)
        public.verify(sig, b"message", alg=alg)
        with pytest.raises(InvalidSignatureError):
            public.verify(sig, b"messagE", alg=alg)
        with pytest.raises(InvalidSignatureError):
            public.verify(sig[:-1] + bytes([sig[-1] ^ 1]), b"message", alg=alg)
    assert b"PRIVATE" not in repr(key).encode()


def test_rsa_pss_and_pkcs1_are_not_interchangeable() -> None:
    key = generate_private_key("rsa", rsa_bits=2048)
    sig = key.sign(b"m", alg="PS256")
    with pytest.raises(InvalidSignatureError):
        key.public_key().verify(sig, b"m", alg="RS256")


@pytest.mark.parametrize(
    ("kty", "alg"),
    [
        ("ed25519", "RS256"),
        ("ed25519", "SM2"),
        ("rsa", "EdDSA"),
        ("rsa", "SM2"),
        ("sm2", "EdDSA"),
        ("sm2", "PS256"),
        ("ed25519", "none"),
        ("rsa", "HS256"),
    ],
)
def test_a_key_refuses_algorithms_that_are_not_its_own(kty: str, alg: str) -> None:
    key = generate_private_key(kty, rsa_bits=2048)
    with pytest.raises(UnsupportedAlgorithmError):
        key.sign(b"m", alg=alg)
    with pytest.raises(UnsupportedAlgorithmError):
        key.public_key().verify(b"x" * 64, b"m", alg=alg)


def test_wrong_or_missing_passphrase(tmp_path: Path) -> None:
    key = generate_private_key("sm2")
    key.save(tmp_path / "k.pem", passphrase="right")
    with pytest.raises(KeyFileError, match="passphrase"):
        load_private_key(tmp_path / "k.pem")
    with pytest.raises(KeyFileError):
        load_private_key(tmp_path / "k.pem", "wrong")


def test_small_rsa_and_foreign_key_types_are_refused(tmp_path: Path) -> None:
    small = rsa.generate_private_key(65537, 1024)
    pem = small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFileError, match="2048"):
        load_private_key(pem)
    with pytest.raises(UnsupportedAlgorithmError):
        generate_private_key("rsa", rsa_bits=1024)
    p256 = ec.generate_private_key(ec.SECP256R1())
    pem = p256.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFileError, match="unsupported"):
        load_private_key(pem)
    with pytest.raises(UnsupportedAlgorithmError):
        generate_private_key("dsa")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "ключ".encode(),
    ],
)
def test_garbage_key_files(data: bytes) -> None:
    with pytest.raises(KeyFileError):
        load_private_key(data)
    with pytest.raises(KeyFileError):
        load_public_key(data)


def test_public_loader_refuses_private_key_and_vice_versa() -> None:
    key = generate_private_key("ed25519")
    with pytest.raises(KeyFileError, match="public key"):
        load_public_key(key.to_pem())
    with pytest.raises(KeyFileError, match="private key is needed"):
        load_private_key(key.public_key().to_pem())


def test_sm2_key_file_with_mismatched_public_key_is_refused() -> None:
    from Crypto.IO import PEM, PKCS8
    from Crypto.Util.asn1 import DerObjectId

    from modelseal.crypto import sm2

    d1, _ = sm2.generate()
    _, q2 = sm2.generate()
    der = PKCS8.wrap(
        sm2.encode_ec_private_key(d1, q2),
        sm2.OID_EC_PUBLIC_KEY,
        key_params=DerObjectId(sm2.OID_SM2_CURVE),
    )
    with pytest.raises(KeyFileError, match="does not match"):
        load_private_key(PEM.encode(der, "PRIVATE KEY").encode())


def test_content_key_file(tmp_path: Path) -> None:
    key = ContentKey.generate()
    key.save(tmp_path / "cek.json")
    assert stat.S_IMODE((tmp_path / "cek.json").stat().st_mode) == 0o600
    assert ContentKey.load(tmp_path / "cek.json") == key
    # the key's repr and str name it by its id and never show the secret
    assert repr(key) == f"ContentKey(key_id={key.key_id!r})"
    for shown in (repr(key), str(key), f"{key}"):
        assert key.raw().hex() not in shown and repr(key.raw()) not in shown
        assert key.to_jwk()["k"] not in shown
    jwk = json.loads((tmp_path / "cek.json").read_text())
    assert jwk["kid"] == key.key_id
    jwk["k"] = ContentKey.generate().to_jwk()["k"]
    (tmp_path / "bad.json").write_text(json.dumps(jwk))
    with pytest.raises(KeyFileError, match="damaged"):
        ContentKey.load(tmp_path / "bad.json")
    for bad in ["", "{}", "[]", '{"kty":"oct","k":"AAAA"}', '{"kty":"RSA","k":"x"}', "not json"]:
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(KeyFileError):
            ContentKey.load(tmp_path / "bad.json")
    with pytest.raises(KeyFileError):
        ContentKey.load(tmp_path / "missing.json")


@pytest.mark.parametrize("text", ["!!", "A", "AB", "QUJD!", "Zm9=", "Zm 9v", "Zm9v\n", "+/8", "é"])
def test_b64url_decode_refuses_what_is_not_strict_base64url(text: str) -> None:
    """RFC 7515 base64url, no padding: characters outside the alphabet were silently
    dropped ("!!" decoded to b""), so a malformed salt or verifier read as empty."""
    from modelseal.crypto.keys import b64url_decode

    with pytest.raises(ValueError, match="base64url"):
        b64url_decode(text)


@given(st.binary(max_size=64))
def test_b64url_round_trips_every_byte_string(data: bytes) -> None:
    from modelseal.crypto.keys import b64url, b64url_decode

    assert b64url_decode(b64url(data)) == data
