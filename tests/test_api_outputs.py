"""The Python API never destroys a key, a container or a license it was not told to replace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import modelseal
from modelseal._fs import write_file
from modelseal.crypto import ContentKey, generate_private_key
from modelseal.errors import InvalidArgumentError, OutputError, OutputExistsError


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "m.bin"
    path.write_bytes(b"weights" * 1000)
    return path


def test_content_key_save_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    first = ContentKey.generate()
    first.save(path)
    with pytest.raises(OutputExistsError):
        ContentKey.generate().save(path)
    assert ContentKey.load(path) == first
    second = ContentKey.generate()
    second.save(path, overwrite=True)
    assert ContentKey.load(path) == second
    assert path.stat().st_mode & 0o777 == 0o600


def test_signing_key_save_refuses_an_existing_file(tmp_path: Path) -> None:
    key = generate_private_key("ed25519")
    key.save(tmp_path / "v.pem")
    key.public_key().save(tmp_path / "v.pub")
    pem = (tmp_path / "v.pem").read_bytes()
    with pytest.raises(OutputExistsError):
        generate_private_key("ed25519").save(tmp_path / "v.pem")
    with pytest.raises(OutputExistsError):
        generate_private_key("ed25519").public_key().save(tmp_path / "v.pub")
    assert (tmp_path / "v.pem").read_bytes() == pem


def test_seal_refuses_an_existing_output_and_an_input_as_output(
    tmp_path: Path, model: Path
) -> None:
    key = ContentKey.generate()
    key.save(tmp_path / "k.key")
    out = tmp_path / "m.mseal"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        modelseal.seal(model, out, key=key)
    assert out.read_bytes() == b"precious"
    modelseal.seal(model, out, key=key, overwrite=True)
    assert modelseal.inspect(out).key_id == key.key_id
    # the key file it seals with, even with overwrite
    with pytest.raises(OutputExistsError, match="input"):
        modelseal.seal(model, tmp_path / "k.key", key=tmp_path / "k.key", overwrite=True)
    assert ContentKey.load(tmp_path / "k.key") == key
    with pytest.raises(OutputExistsError, match="input"):
        modelseal.seal(model, model, key=key, overwrite=True)


def test_seal_key_out_is_written_before_the_container(tmp_path: Path, model: Path) -> None:
    key = modelseal.seal(model, tmp_path / "a.mseal", key_out=tmp_path / "a.key")
    assert ContentKey.load(tmp_path / "a.key") == key
    assert modelseal.load(tmp_path / "a.mseal", key=tmp_path / "a.key") == model.read_bytes()
    # a key location that cannot be written: no container appears
    with pytest.raises(OutputError, match="nodir"):
        modelseal.seal(model, tmp_path / "b.mseal", key_out=tmp_path / "nodir" / "b.key")
    assert not (tmp_path / "b.mseal").exists()
    # a failed seal leaves neither the key nor a temporary file
    with pytest.raises(modelseal.FormatError):
        modelseal.seal(model, tmp_path / "c.mseal", key_out=tmp_path / "c.key", chunk_size=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.key", "a.mseal", "m.bin"]
    with pytest.raises(InvalidArgumentError):
        modelseal.seal(model, tmp_path / "d.mseal", key=key, key_out=tmp_path / "d.key")


def test_load_argument_errors_are_modelseal_errors(tmp_path: Path) -> None:
    for kwargs in ({}, {"license": "l.jwt"}, {"license": "l.jwt", "key": "k", "trust": "t"}):
        with pytest.raises(modelseal.ModelsealError):
            modelseal.load(tmp_path / "m.mseal", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"key=|license="):  # as plain Python expects
            modelseal.load(tmp_path / "m.mseal", **kwargs)  # type: ignore[arg-type]


def test_guard_and_api_share_one_loader() -> None:
    """The import circle api <-> guard is gone: both use loaders.dispatch."""
    import ast
    import inspect as pyinspect

    import modelseal.guard.core as core

    tree = ast.parse(pyinspect.getsource(core))
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    imported |= {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "modelseal.loaders.dispatch" in imported
    assert not any(m == "modelseal.api" or m == "modelseal" for m in imported)
    names = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "modelseal"
        for alias in node.names
    }
    assert "api" not in names


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=2000), exists=st.booleans(), overwrite=st.booleans())
def test_write_file_is_all_or_nothing(data: bytes, exists: bool, overwrite: bool) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "out"
        if exists:
            path.write_bytes(b"old")
        if exists and not overwrite:
            with pytest.raises(OutputExistsError):
                write_file(path, data, overwrite=overwrite)
            assert path.read_bytes() == b"old"
        else:
            write_file(path, data, overwrite=overwrite, mode=0o600)
            assert path.read_bytes() == data
            assert path.stat().st_mode & 0o777 == 0o600
        assert os.listdir(d) == ["out"]  # never a temporary file left behind
