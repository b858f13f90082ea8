"""The CLI as a user runs it: a subprocess, stdout/stderr, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import modelseal

EXE = [sys.executable, "-m", "modelseal.cli"]


def ms(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
        check=False,
    )


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "m.safetensors"
    save_file({"w": np.arange(5000, dtype=np.float32)}, str(path))
    return path


def test_seal_inspect_verify_load(tmp_path: Path, model: Path) -> None:
    r = ms(
        "seal",
        model,
        "--out",
        tmp_path / "m.mseal",
        "--new-key-out",
        tmp_path / "m.key",
        "--model-id",
        "acme/m",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["framework"] == "safetensors" and info["aead"] == "aes-256-gcm"
    assert (tmp_path / "m.key").stat().st_mode & 0o777 == 0o600

    r = ms("inspect", tmp_path / "m.mseal", "--json")
    assert r.returncode == 0
    header = json.loads(r.stdout)
    assert header["model_id"] == "acme/m" and header["key_id"] == info["key_id"]
    assert "k" not in header

    r = ms("inspect", tmp_path / "m.mseal")
    assert r.returncode == 0 and "unverified" in r.stdout and "m.safetensors" in r.stdout

    r = ms("verify", tmp_path / "m.mseal", "--key-file", tmp_path / "m.key", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True

    loaded = modelseal.load(tmp_path / "m.mseal", key=tmp_path / "m.key", framework="numpy")
    np.testing.assert_array_equal(loaded["w"], np.arange(5000, dtype=np.float32))

    # re-seal with an existing key and SM4
    r = ms(
        "seal",
        model,
        "--out",
        tmp_path / "s.mseal",
        "--key-file",
        tmp_path / "m.key",
        "--aead",
        "sm4-gcm",
    )
    assert r.returncode == 0, r.stderr
    assert modelseal.inspect(tmp_path / "s.mseal").aead == "sm4-gcm"


def test_seal_directory(tmp_path: Path, model: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    (d / "config.json").write_text("{}")
    model.rename(d / "model.safetensors")
    r = ms("seal", d, "-o", tmp_path / "d.mseal", "--new-key-out", tmp_path / "d.key")
    assert r.returncode == 0, r.stderr
    files = modelseal.load(tmp_path / "d.mseal", key=tmp_path / "d.key", framework="bytes")
    assert set(files) == {"config.json", "model.safetensors"}


def _one_line_error(r: subprocess.CompletedProcess[str], code: int) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr


def test_bad_input_is_one_line_and_a_documented_exit_code(tmp_path: Path, model: Path) -> None:
    assert (
        ms(
            "seal", model, "--out", tmp_path / "m.mseal", "--new-key-out", tmp_path / "m.key"
        ).returncode
        == 0
    )
    blob = bytearray((tmp_path / "m.mseal").read_bytes())
    blob[-10] ^= 1
    (tmp_path / "t.mseal").write_bytes(bytes(blob))
    _one_line_error(ms("verify", tmp_path / "t.mseal", "--key-file", tmp_path / "m.key"), 4)
    ms("seal", model, "--out", tmp_path / "o.mseal", "--new-key-out", tmp_path / "o.key")
    _one_line_error(ms("verify", tmp_path / "m.mseal", "--key-file", tmp_path / "o.key"), 5)
    _one_line_error(ms("inspect", model), 3)
    _one_line_error(ms("inspect", tmp_path / "missing.mseal"), 3)
    _one_line_error(ms("verify", tmp_path / "m.mseal", "--key-file", model), 5)
    (tmp_path / "trunc.mseal").write_bytes(bytes(blob[:100]))
    _one_line_error(ms("inspect", tmp_path / "trunc.mseal"), 3)
    _one_line_error(ms("seal", model, "--out", tmp_path / "x.mseal"), 2)  # no key option
    _one_line_error(
        ms("seal", model, "--out", tmp_path / "x.mseal", "--new-key-out", tmp_path / "m.key"), 2
    )  # refuses to overwrite a key
    _one_line_error(
        ms(
            "seal",
            model,
            "--out",
            tmp_path / "x.mseal",
            "--new-key-out",
            tmp_path / "x.key",
            "--aead",
            "rot13",
        ),
        2,
    )
    assert not (tmp_path / "x.key").exists() and not (tmp_path / "x.mseal").exists()


@pytest.mark.parametrize("alg", ["ed25519", "rsa", "sm2"])
def test_keys_generate(tmp_path: Path, alg: str) -> None:
    r = ms(
        "keys",
        "generate",
        "--alg",
        alg,
        "--out-dir",
        tmp_path / "k",
        "--json",
        "--rsa-bits",
        "2048",
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    key = modelseal.crypto.load_private_key(info["private_key"])
    assert (
        key.key_id == info["key_id"] == modelseal.crypto.load_public_key(info["public_key"]).key_id
    )
    _one_line_error(ms("keys", "generate", "--alg", alg, "--out-dir", tmp_path / "k"), 2)  # exists
    r = ms(
        "keys",
        "generate",
        "--alg",
        alg,
        "--out",
        tmp_path / "e",
        "--passphrase-env",
        "PW",
        "--rsa-bits",
        "2048",
        env={"PW": "hunter2"},
    )
    assert r.returncode == 0, r.stderr
    assert b"ENCRYPTED" in (tmp_path / "e" / "vendor.pem").read_bytes()
    modelseal.crypto.load_private_key(tmp_path / "e" / "vendor.pem", "hunter2")
    _one_line_error(ms("keys", "generate", "--alg", "dsa", "--out", tmp_path / "z"), 2)


def test_help_has_examples() -> None:
    for cmd in (["seal"], ["inspect"], ["verify"], ["keys", "generate"]):
        r = ms(*cmd, "--help")
        assert r.returncode == 0 and "Example:" in r.stdout, cmd
