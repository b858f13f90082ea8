"""Interop with Debian's openssl 3 CLI, the independent oracle: what we sign
and encrypt opens there, what it signs and encrypts opens here, and the key
files we write are the ones it reads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from modelseal.crypto import generate_private_key, load_private_key, load_public_key
from modelseal.errors import DecryptionError, InvalidSignatureError

pytestmark = pytest.mark.openssl
DISTID = "distid:1234567812345678"
ROUNDS = 5


def run(*args: str, input: bytes | None = None) -> bytes:
    proc = subprocess.run(args, input=input, capture_output=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


@pytest.mark.parametrize("i", range(ROUNDS))
def test_sm2_signatures_both_ways(openssl: str, tmp_path: Path, i: int) -> None:
    key = generate_private_key("sm2")
    key.save(tmp_path / "k.pem")
    key.public_key().save(tmp_path / "k.pub")
    msg = os.urandom(1 + i * 37)
    (tmp_path / "msg").write_bytes(msg)

    # ours -> openssl
    (tmp_path / "ours.sig").write_bytes(key.sign(msg, alg="SM2"))
    out = run(
        openssl,
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(tmp_path / "k.pub"),
        "-rawin",
        "-digest",
        "sm3",
        "-pkeyopt",
        DISTID,
        "-in",
        str(tmp_path / "msg"),
        "-sigfile",
        str(tmp_path / "ours.sig"),
    )
    assert b"Signature Verified Successfully" in out

    # openssl -> ours
    theirs = run(
        openssl,
        "pkeyutl",
        "-sign",
        "-inkey",
        str(tmp_path / "k.pem"),
        "-rawin",
        "-digest",
        "sm3",
        "-pkeyopt",
        DISTID,
        "-in",
        str(tmp_path / "msg"),
    )
    key.public_key().verify(theirs, msg, alg="SM2")
    with pytest.raises(InvalidSignatureError):
        key.public_key().verify(theirs, msg + b"x", alg="SM2")


@pytest.mark.parametrize("i", range(ROUNDS))
def test_sm2_encryption_both_ways(openssl: str, tmp_path: Path, i: int) -> None:
    key = generate_private_key("sm2")
    key.save(tmp_path / "k.pem")
    key.public_key().save(tmp_path / "k.pub")
    secret = os.urandom(16 + i * 8)

    # ours -> openssl
    (tmp_path / "ours.ct").write_bytes(key.public_key().sm2_encrypt(secret))
    got = run(
        openssl,
        "pkeyutl",
        "-decrypt",
        "-inkey",
        str(tmp_path / "k.pem"),
        "-in",
        str(tmp_path / "ours.ct"),
    )
    assert got == secret

    # openssl -> ours
    ct = run(
        openssl, "pkeyutl", "-encrypt", "-pubin", "-inkey", str(tmp_path / "k.pub"), input=secret
    )
    assert key.sm2_decrypt(ct) == secret
    other = generate_private_key("sm2")
    with pytest.raises(DecryptionError):
        other.sm2_decrypt(ct)


@pytest.mark.parametrize("kty", ["ed25519", "rsa", "sm2"])
def test_openssl_reads_our_key_files(openssl: str, tmp_path: Path, kty: str) -> None:
    key = generate_private_key(kty, rsa_bits=2048)
    key.save(tmp_path / "k.pem")
    key.save(tmp_path / "k.enc.pem", passphrase="correct horse")
    key.public_key().save(tmp_path / "k.pub")
    run(openssl, "pkey", "-in", str(tmp_path / "k.pem"), "-noout")
    run(
        openssl,
        "pkey",
        "-in",
        str(tmp_path / "k.enc.pem"),
        "-passin",
        "pass:correct horse",
        "-noout",
    )
    run(openssl, "pkey", "-pubin", "-in", str(tmp_path / "k.pub"), "-noout")
    # openssl derives the same public key from our private key file
    derived = run(openssl, "pkey", "-in", str(tmp_path / "k.pem"), "-pubout")
    assert load_public_key(derived) == key.public_key()
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("kty", "genpkey"),
    [
        ("ed25519", ["-algorithm", "ED25519"]),
        ("rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        ("sm2", ["-algorithm", "SM2"]),
    ],
)
def test_we_read_openssl_key_files(
    openssl: str, tmp_path: Path, kty: str, genpkey: list[str]
) -> None:
    pem = tmp_path / "o.pem"
    run(openssl, "genpkey", *genpkey, "-out", str(pem))
    enc = tmp_path / "o.enc.pem"
    run(
        openssl,
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-in",
        str(pem),
        "-out",
        str(enc),
        "-passout",
        "pass:pw",
    )
    pub = run(openssl, "pkey", "-in", str(pem), "-pubout")
    key = load_private_key(pem)
    assert key.kty == kty
    assert load_private_key(enc, "pw").public_key() == key.public_key() == load_public_key(pub)
