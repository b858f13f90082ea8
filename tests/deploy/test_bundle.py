"""The files a spec names are read once and checked for what their field says they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelseal.crypto import generate_private_key
from modelseal.deploy import DeploySpecError, load_bundle
from modelseal.deploy.bundle import MAX_INPUT_BYTES
from tests.deploy.conftest import DEMO_SPEC, FULL_SPEC, write_spec_dir


def refused(spec: Path, path: str, message: str) -> None:
    with pytest.raises(DeploySpecError) as info:
        load_bundle(spec)
    assert [p for p, _ in info.value.problems] == [path]
    assert message in str(info.value)
    assert str(spec) in str(info.value)


def test_files_resolve_next_to_the_spec(demo_spec: Path, inputs: dict[str, str]) -> None:
    bundle = load_bundle(demo_spec)
    assert bundle.license == inputs["license.jwt"]
    assert bundle.envelope_key == inputs["gateway-sm2.pub"]
    assert bundle.trust is None and bundle.name == "demo-classifier"


def test_absolute_paths_work_too(tmp_path: Path, inputs: dict[str, str]) -> None:
    elsewhere = tmp_path / "secrets"
    elsewhere.mkdir()
    (elsewhere / "l.jwt").write_text(inputs["license.jwt"])
    spec = write_spec_dir(
        tmp_path / "s",
        DEMO_SPEC.replace("file: license.jwt", f"file: {elsewhere / 'l.jwt'}"),
        inputs,
    )
    assert load_bundle(spec).license == inputs["license.jwt"]


def test_missing_license(demo_spec: Path) -> None:
    (demo_spec.parent / "license.jwt").unlink()
    refused(demo_spec, "spec.license.file", "no such file")


def test_a_license_that_is_not_a_jws(demo_spec: Path) -> None:
    (demo_spec.parent / "license.jwt").write_text("hello.world")
    refused(demo_spec, "spec.license.file", "not a modelseal license")


def test_binary_and_oversized_inputs(demo_spec: Path) -> None:
    (demo_spec.parent / "license.jwt").write_bytes(b"\xff\xfe\x00")
    refused(demo_spec, "spec.license.file", "not UTF-8")
    (demo_spec.parent / "license.jwt").write_bytes(b"e" * (MAX_INPUT_BYTES + 1))
    refused(demo_spec, "spec.license.file", "larger than")
    (demo_spec.parent / "license.jwt").unlink()
    (demo_spec.parent / "license.jwt").mkdir()
    refused(demo_spec, "spec.license.file", "is a directory")


def test_envelope_key_must_be_an_sm2_public_key(demo_spec: Path) -> None:
    key_file = demo_spec.parent / "gateway-sm2.pub"
    key_file.write_bytes(generate_private_key("ed25519").public_key().to_pem())
    refused(demo_spec, "spec.envelopeKey.file", "SM2, not ed25519")
    key_file.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    refused(demo_spec, "spec.envelopeKey.file", "not a public key")
    key_file.write_bytes(b"x" * (MAX_INPUT_BYTES + 1))
    refused(demo_spec, "spec.envelopeKey.file", "larger than")


def test_trust_file_is_a_key_or_a_json_store(full_spec: Path, inputs: dict[str, str]) -> None:
    assert load_bundle(full_spec).trust == ("trust.pub", inputs["vendor.pub"])
    (full_spec.parent / "vendor.pub").write_text("not a key")
    refused(full_spec, "spec.trust.file", "not a public key")
    full_spec.write_text(FULL_SPEC.replace("vendor.pub", "trust.json"))
    (full_spec.parent / "trust.json").write_text('{"acme": ["..."]}')
    assert load_bundle(full_spec).trust == ("trust.json", '{"acme": ["..."]}')
    (full_spec.parent / "trust.json").write_text("[1, 2]")
    refused(full_spec, "spec.trust.file", "JSON object")
