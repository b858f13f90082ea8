from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from modelseal.crypto import AES_256_GCM, SM4_GCM, new_aead
from modelseal.errors import DecryptionError, UnsupportedAlgorithmError
from tests.conftest import load_vectors


def test_aes_256_gcm_nist_test_case_14() -> None:
    # McGrew & Viega, "The Galois/Counter Mode of Operation", test case 14 (AES-256).
    aead = new_aead(AES_256_GCM, bytes(32))
    out = aead.encrypt(bytes(12), bytes(16), b"")
    assert out.hex() == "cea7403d4d606b6e074ec5d3baf39d18" + "d0d1c8a799996bf0265b98b5d48ab919"
    assert aead.decrypt(bytes(12), out, b"") == bytes(16)


def test_sm4_gcm_rfc8998_vector() -> None:
    (v,) = load_vectors("sm-standard.json")["sm4_gcm"]
    aead = new_aead(SM4_GCM, bytes.fromhex(v["key"]))
    ct = aead.encrypt(
        bytes.fromhex(v["iv"]), bytes.fromhex(v["plaintext"]), bytes.fromhex(v["aad"])
    )
    assert ct.hex().upper() == v["ciphertext"] + v["tag"]
    pt = aead.decrypt(bytes.fromhex(v["iv"]), ct, bytes.fromhex(v["aad"]))
    assert pt.hex().upper() == v["plaintext"]


def test_sm4_block_cipher_standard_example() -> None:
    for v in load_vectors("sm-standard.json")["sm4_ecb"][:1]:
        enc = Cipher(algorithms.SM4(bytes.fromhex(v["key"])), modes.ECB()).encryptor()
        assert enc.update(bytes.fromhex(v["plaintext"])).hex().upper() == v["ciphertext"]


@pytest.mark.parametrize("name", [AES_256_GCM, SM4_GCM])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096])
def test_roundtrip_and_every_bit_of_the_tag_matters(name: str, size: int) -> None:
    key = os.urandom(32 if name == AES_256_GCM else 16)
    aead = new_aead(name, key)
    nonce, pt, aad = os.urandom(12), os.urandom(size), b"header"
    ct = aead.encrypt(nonce, pt, aad)
    assert len(ct) == size + 16
    assert aead.decrypt(nonce, ct, aad) == pt
    for i in (0, len(ct) - 1, len(ct) // 2):
        bad = bytearray(ct)
        bad[i] ^= 0x80
        with pytest.raises(DecryptionError):
            aead.decrypt(nonce, bytes(bad), aad)
    with pytest.raises(DecryptionError):
        aead.decrypt(nonce, ct, aad + b"x")
    with pytest.raises(DecryptionError):
        aead.decrypt(os.urandom(12), ct, aad)


@pytest.mark.parametrize("name", [AES_256_GCM, SM4_GCM])
def test_seal_random_uses_fresh_nonces(name: str) -> None:
    aead = new_aead(name, os.urandom(32 if name == AES_256_GCM else 16))
    a, b = aead.seal_random(b"same", b"aad"), aead.seal_random(b"same", b"aad")
    assert a != b
    assert aead.open_random(a, b"aad") == aead.open_random(b, b"aad") == b"same"
    with pytest.raises(DecryptionError):
        aead.open_random(a[:20], b"aad")


def test_unknown_aead_and_wrong_key_sizes() -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        new_aead("chacha20-poly1305", bytes(32))
    with pytest.raises(ValueError, match="32-byte"):
        new_aead(AES_256_GCM, bytes(16))
    with pytest.raises(ValueError, match="16-byte"):
        new_aead(SM4_GCM, bytes(32))
