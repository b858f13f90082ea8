"""Signing keys in a PKCS#11 token (SoftHSM2, a real PKCS#11 implementation): licenses it
signs verify with ``modelseal license verify`` and with PyJWT; the key never leaves it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jwt
import pkcs11
import pytest
from sqlalchemy import create_engine, text

from modelseal.controlplane.settings import Settings
from modelseal.crypto import ContentKey, load_public_key
from modelseal.license import read_unverified
from tests.controlplane.conftest import Server, catalog, fake_request, order, run_cli

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "246810"


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh token in a temporary store; the server under test reads these settings."""
    assert MODULE.exists(), "softhsm2 is not installed (apt-get install softhsm2; .ci/run does)"
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "modelseal",
         "--pin", PIN, "--so-pin", "13579111"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    pin = tmp_path / "pin"
    pin.write_text(PIN + "\n")
    monkeypatch.setenv("MODELSEAL_PKCS11_MODULE", str(MODULE))
    monkeypatch.setenv("MODELSEAL_PKCS11_TOKEN", "modelseal")
    monkeypatch.setenv("MODELSEAL_PKCS11_PIN_FILE", str(pin))
    return conf


def _license(client, seed: int) -> tuple[dict, str]:  # type: ignore[no-untyped-def,type-arg]
    ids = catalog(client, ContentKey.generate())
    made = order(client, ids)
    key = made["license_key"]
    act = client.post(
        "/v1/activate", json={"license_key": key, "request": fake_request(key, seed=seed).to_json()}
    )
    assert act.status_code == 201, act.text
    return made, str(act.json()["license"])


def test_licenses_signed_in_the_token_verify(softhsm: Path, server: Server, tmp_path: Path) -> None:
    c = server.client()
    # SM2 has no PKCS#11 mechanism in SoftHSM2: refused, the current key stays
    sm2 = c.post("/v1/keys/rotate", params={"kty": "sm2", "store": "hsm"})
    assert sm2.status_code == 409, sm2.text
    trust_file = tmp_path / "trust.json"
    for kty, alg in (("ed25519", "EdDSA"), ("rsa", "PS256")):
        rotated = c.post("/v1/keys/rotate", params={"kty": kty, "store": "hsm"})
        assert rotated.status_code == 201, rotated.text
        kid = rotated.json()["kid"]
        made, token = _license(c, seed=len(kty))
        header, _ = read_unverified(token)
        assert header["kid"] == kid and header["alg"] == alg
        # 1. modelseal's own verifier, with the trust file the server exports
        trust_file.write_bytes(c.get("/v1/keys/trust").content)
        lic_file = tmp_path / f"{kty}.jwt"
        lic_file.write_text(token)
        verified = run_cli("license", "verify", str(lic_file), "--trust", str(trust_file), "--json")
        out = json.loads(verified.stdout)
        assert out["ok"] is True and out["license_id"] == made["id"], verified.stdout
        # 2. PyJWT, an independent implementation
        pem = next(k for k in c.get("/v1/keys").json() if k["kid"] == kid)["public_pem"]
        public = load_public_key(pem.encode())
        decoded = jwt.decode(
            token,
            key=public._key,  # the cryptography object PyJWT takes
            algorithms=[alg],
            options={"verify_aud": False},
        )
        assert decoded["jti"] == made["id"]
        # an edited license fails both
        head, sig = token.rsplit(".", 1)
        forged = head + "." + ("B" if sig[0] == "A" else "A") + sig[1:]
        lic_file.write_text(forged)
        assert run_cli("license", "verify", str(lic_file), "--trust", str(trust_file),
                       check=False).returncode != 0  # fmt: skip
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(forged, key=public._key, algorithms=[alg], options={"verify_aud": False})
    c.close()
    # the key table holds references, never a private key
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)
    engine = create_engine(settings.sqlalchemy_url)
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT kty, private_sealed FROM signing_keys ORDER BY created_at")
        ).all()
    engine.dispose()
    in_token = [s for kty, s in stored if s.startswith("pkcs11:")]
    assert len(in_token) == 2
    # in the token the private keys are sensitive and not extractable
    token = pkcs11.lib(str(MODULE)).get_token(token_label="modelseal")
    with token.open(user_pin=PIN) as session:
        keys = list(session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY}))
        assert len(keys) == 2
        for key in keys:
            assert key[pkcs11.Attribute.SENSITIVE] is True
            assert key[pkcs11.Attribute.EXTRACTABLE] is False
            with pytest.raises(pkcs11.PKCS11Error):
                key[pkcs11.Attribute.VALUE]
