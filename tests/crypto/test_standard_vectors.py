"""SM2/SM3 against published examples (sources recorded in tests/vectors/sm-standard.json)."""

from __future__ import annotations

import hashlib

import pytest
from Crypto.Util.asn1 import DerInteger, DerOctetString, DerSequence

from modelseal.crypto import sm2
from modelseal.errors import DecryptionError, InvalidSignatureError
from tests.conftest import load_vectors

V = load_vectors("sm-standard.json")


@pytest.mark.parametrize("v", V["sm3"], ids=lambda v: v["msg"][:8])
def test_sm3_examples(v: dict[str, str]) -> None:
    assert hashlib.new("sm3", bytes.fromhex(v["msg_hex"])).hexdigest().upper() == v["digest"]


@pytest.mark.parametrize("v", V["sm2_sign"], ids=lambda v: v["standard"][:24])
def test_sm2_signature_example_verifies(v: dict[str, str]) -> None:
    public = bytes.fromhex(v["x"] + v["y"])
    der = DerSequence([DerInteger(int(v["r"], 16)), DerInteger(int(v["s"], 16))]).encode()
    msg = bytes.fromhex(v["msg_hex"])
    uid = bytes.fromhex(v["id_hex"]) if "id_hex" in v else v["id"].encode()
    sm2.verify(public, msg, der, user_id=uid)
    with pytest.raises(InvalidSignatureError):
        sm2.verify(public, msg + b"!", der, user_id=uid)
    with pytest.raises(InvalidSignatureError):
        sm2.verify(public, msg, der, user_id=b"another id")


@pytest.mark.parametrize("v", V["sm2_encrypt"], ids=lambda v: v["standard"][:24])
def test_sm2_encryption_example_decrypts(v: dict[str, str]) -> None:
    d = bytes.fromhex(v["d"])
    if "ciphertext_der_gmt0009" in v:
        der = bytes.fromhex(v["ciphertext_der_gmt0009"])
    else:  # raw 04 || x || y || C3 || C2 -> the DER form OpenSSL and we use
        raw = bytes.fromhex(v["ciphertext_c1c3c2_raw"])
        x, y, c3, c2 = raw[1:33], raw[33:65], raw[65:97], raw[97:]
        der = DerSequence(
            [
                DerInteger(int.from_bytes(x, "big")),
                DerInteger(int.from_bytes(y, "big")),
                DerOctetString(c3),
                DerOctetString(c2),
            ]
        ).encode()
    msg = bytes.fromhex(v["msg_hex"]) if "msg_hex" in v else v["msg"].encode()
    assert sm2.decrypt(d, der) == msg
    bad = bytearray(der)
    bad[-1] ^= 1  # C2 changes: C3 must no longer match
    with pytest.raises(DecryptionError):
        sm2.decrypt(d, bytes(bad))
