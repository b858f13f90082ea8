"""An envelope's wrapped session key opens with Debian's openssl CLI, and the key it
yields decrypts the body with cryptography's primitives: our wrapping is plain
SM2 C1C3C2 DER, readable without modelseal."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from modelseal.crypto import generate_private_key
from modelseal.envelope import EnvelopeSealer, parse

pytestmark = pytest.mark.openssl


def test_openssl_unwraps_the_session_key(openssl: str, tmp_path: Path) -> None:
    gateway = generate_private_key("sm2")
    gateway.save(tmp_path / "gateway.pem")
    sealer = EnvelopeSealer(gateway.public_key())
    body = b'{"outputs":[{"name":"y","data":[1,2,3]}]}'
    data = sealer.seal(body, request_id="req-42")
    env = parse(data)
    (tmp_path / "wrapped.der").write_bytes(env.wrapped_key)
    proc = subprocess.run(
        [
            openssl,
            "pkeyutl",
            "-decrypt",
            "-inkey",
            str(tmp_path / "gateway.pem"),
            "-in",
            str(tmp_path / "wrapped.der"),
        ],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    session_key = proc.stdout
    assert len(session_key) == 16
    dec = Cipher(
        algorithms.SM4(session_key), modes.GCM(env.nonce, env.ciphertext[-16:])
    ).decryptor()
    dec.authenticate_additional_data(env.aad("req-42"))
    assert dec.update(env.ciphertext[:-16]) + dec.finalize() == body
