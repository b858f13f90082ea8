"""Envelopes: round trips, rotation, the key cache, refusals, vectors, and parsing of junk."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.crypto import PrivateKey, generate_private_key, load_private_key
from modelseal.envelope import (
    EnvelopeFormatError,
    EnvelopeIntegrityError,
    EnvelopeOpener,
    EnvelopeSealer,
    SessionPolicy,
    WrongGatewayKeyError,
    parse,
)
from modelseal.envelope import errors as envelope_errors
from modelseal.errors import ModelsealError, UnsupportedAlgorithmError
from tests.conftest import load_vectors

VECTORS = load_vectors("envelope-v1.json")


@pytest.fixture(scope="module")
def gateway() -> PrivateKey:
    return generate_private_key("sm2")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("aead", ["sm4-gcm", "aes-256-gcm"])
def test_round_trip_carries_status_and_content_type(gateway: PrivateKey, aead: str) -> None:
    sealer = EnvelopeSealer(gateway.public_key(), aead=aead)
    opener = EnvelopeOpener(gateway)
    data = sealer.seal(b'{"x":1}', request_id="abc", status=422, content_type="text/plain")
    assert b'{"x":1}' not in data
    opened = opener.open(data, request_id="abc")
    assert (opened.status, opened.content_type, opened.body) == (422, "text/plain", b'{"x":1}')


def test_one_unwrap_per_session_key_and_rotation_by_count_and_age(gateway: PrivateKey) -> None:
    clock = Clock()
    sealer = EnvelopeSealer(
        gateway.public_key(), policy=SessionPolicy(max_age_s=60, max_messages=10), clock=clock
    )
    opener = EnvelopeOpener(gateway)
    for i in range(25):
        opener.open(sealer.seal(b"%d" % i, request_id=f"r{i}"), request_id=f"r{i}")
    assert sealer.rotations == 3  # 10 + 10 + 5
    assert opener.unwraps == 3
    clock.now += 61
    opener.open(sealer.seal(b"late", request_id="x"), request_id="x")
    assert sealer.rotations == 4
    assert opener.unwraps == 4


def test_lru_evicts_the_least_recently_used_key(gateway: PrivateKey) -> None:
    opener = EnvelopeOpener(gateway, cache_size=2)
    sealers = [EnvelopeSealer(gateway.public_key()) for _ in range(3)]
    envs = [s.seal(b"x", request_id="r") for s in sealers]
    for env in envs[:2]:
        opener.open(env, request_id="r")
    opener.open(envs[0], request_id="r")  # 0 is now most recent; 1 is next to go
    opener.open(envs[2], request_id="r")  # evicts 1
    assert opener.unwraps == 3
    opener.open(envs[0], request_id="r")
    assert opener.unwraps == 3
    opener.open(envs[1], request_id="r")
    assert opener.unwraps == 4
    assert opener.cached_keys == 2


def test_replay_tamper_and_wrong_key_are_refused(gateway: PrivateKey) -> None:
    sealer = EnvelopeSealer(gateway.public_key())
    opener = EnvelopeOpener(gateway)
    data = sealer.seal(b"secret answer", request_id="req-1")
    with pytest.raises(EnvelopeIntegrityError, match="another request"):
        opener.open(data, request_id="req-2")
    for pos in (6, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        with pytest.raises(EnvelopeIntegrityError):
            opener.open(bytes(bad), request_id="req-1")
    other = generate_private_key("sm2")
    with pytest.raises(WrongGatewayKeyError, match="gateway key"):
        EnvelopeOpener(other).open(data, request_id="req-1")
    # the cache does not make a tampered envelope acceptable after a good one
    assert opener.open(data, request_id="req-1").body == b"secret answer"
    bad = bytearray(data)
    bad[-3] ^= 0x80
    with pytest.raises(EnvelopeIntegrityError):
        opener.open(bytes(bad), request_id="req-1")


def test_a_wrapped_key_for_another_gateway_under_our_key_id_fails_cleanly(
    gateway: PrivateKey,
) -> None:
    """A service that forged our key id onto another key's wrapping: 502, not a crash."""
    other = generate_private_key("sm2")
    data = EnvelopeSealer(other.public_key()).seal(b"x", request_id="r")
    env = parse(data)
    forged = data.replace(env.key_id.encode(), gateway.key_id.encode(), 1)
    with pytest.raises(EnvelopeIntegrityError, match="does not open"):
        EnvelopeOpener(gateway).open(forged, request_id="r")


def test_bad_arguments(gateway: PrivateKey) -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        EnvelopeSealer(generate_private_key("ed25519").public_key())
    with pytest.raises(UnsupportedAlgorithmError):
        EnvelopeSealer(gateway.public_key(), aead="chacha20")
    with pytest.raises(UnsupportedAlgorithmError):
        EnvelopeOpener(generate_private_key("ed25519"))
    with pytest.raises(ValueError, match="2\\^24"):
        SessionPolicy(max_messages=2**25)
    with pytest.raises(EnvelopeFormatError, match="request id"):
        EnvelopeSealer(gateway.public_key()).seal(b"", request_id="has space")


def test_vectors_open_and_match_an_independent_aead() -> None:
    key = load_private_key(VECTORS["gateway_private_key_pem"].encode())
    assert key.key_id == VECTORS["gateway_key_id"]
    opener = EnvelopeOpener(key)
    for v in VECTORS["vectors"]:
        data = bytes.fromhex(v["envelope"])
        env = parse(data)
        assert env.header.hex() == v["header"]
        assert env.aad(v["request_id"]).hex() == v["aad"]
        assert key.sm2_decrypt(env.wrapped_key).hex() == v["session_key"]
        opened = opener.open(data, request_id=v["request_id"])
        assert opened.body.hex() == v["plaintext"], v["name"]
        assert (opened.status, opened.content_type) == (v["status"], v["content_type"])
        # the same bytes through cryptography's primitives directly, not our Aead
        sk, nonce, aad = (bytes.fromhex(v[k]) for k in ("session_key", "nonce", "aad"))
        ct = env.ciphertext
        if v["aead"] == "aes-256-gcm":
            plain = AESGCM(sk).decrypt(nonce, ct, aad)
        else:
            dec = Cipher(algorithms.SM4(sk), modes.GCM(nonce, ct[-16:])).decryptor()
            dec.authenticate_additional_data(aad)
            plain = dec.update(ct[:-16]) + dec.finalize()
        assert plain.hex() == v["plaintext"]


def test_negative_vectors() -> None:
    opener = EnvelopeOpener(load_private_key(VECTORS["gateway_private_key_pem"].encode()))
    for v in VECTORS["negative"]:
        expected = getattr(envelope_errors, v["error"])
        with pytest.raises(expected):
            opener.open(bytes.fromhex(v["envelope"]), request_id=v["request_id"])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parse_never_raises_anything_but_a_format_error(data: bytes) -> None:
    try:
        env = parse(b"MSEV\x01" + data)
    except EnvelopeFormatError:
        return
    assert env.header + env.ciphertext == b"MSEV\x01" + data


@settings(max_examples=100, deadline=None)
@given(
    body=st.binary(max_size=300),
    rid=st.from_regex(r"[A-Za-z0-9._~-]{0,40}", fullmatch=True),
    pos=st.integers(min_value=0),
    bit=st.integers(min_value=0, max_value=7),
)
def test_any_single_bit_flip_is_refused(
    gateway: PrivateKey, body: bytes, rid: str, pos: int, bit: int
) -> None:
    sealer = EnvelopeSealer(gateway.public_key(), policy=SessionPolicy(max_messages=10**6))
    opener = _OPENERS.setdefault(gateway.key_id, EnvelopeOpener(gateway))
    data = bytearray(sealer.seal(body, request_id=rid))
    assert opener.open(bytes(data), request_id=rid).body == body
    data[pos % len(data)] ^= 1 << bit
    with pytest.raises(ModelsealError):
        opener.open(bytes(data), request_id=rid)


_OPENERS: dict[str, EnvelopeOpener] = {}


def test_importing_modelseal_and_the_envelope_needs_no_server_extra() -> None:
    """``import modelseal`` (and the core envelope package, and serve's public names)
    must work without the serve/gateway extras installed."""
    import subprocess
    import sys

    code = (
        "import sys, modelseal, modelseal.envelope, modelseal.serve\n"
        "bad = {m for m in sys.modules if m.split('.')[0] in "
        "{'aiohttp','starlette','fastapi','uvicorn','redis','sqlalchemy','prometheus_client',"
        "'yaml','httpx'}}\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
