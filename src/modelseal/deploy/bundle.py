"""A spec together with the files it names: what rendering needs, read and checked once.

The spec points at the license, the gateway's envelope key and (optionally)
the vendor's trust key by file name, relative to the spec's folder. They are
read here, with the same care as the spec itself: a file that is missing,
too large, or not what its field says it is (a license that is not a
compact JWS, an envelope key that is not an SM2 public key) is a
:class:`DeploySpecError` naming the field, before anything is rendered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from modelseal.crypto.keys import load_public_key
from modelseal.deploy.errors import DeploySpecError
from modelseal.deploy.spec import FileRef, ModelDeployment, load_spec
from modelseal.errors import ModelsealError
from modelseal.license.jws import unverified_header

#: A Secret or ConfigMap holds at most 1 MiB in all; these files are a few KiB.
MAX_INPUT_BYTES: Final = 256 * 1024


@dataclass(frozen=True)
class DeploymentBundle:
    """A validated spec and the text of every file it names."""

    deployment: ModelDeployment
    license: str
    envelope_key: str | None = None
    #: ``(key, text)``: ``trust.json`` for a trust store, ``trust.pub`` for one key.
    trust: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        return self.deployment.metadata.name


def _read(base: Path, ref: FileRef, field: str, source: str | None) -> str:
    path = Path(ref.file)
    if not path.is_absolute():
        path = base / path
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise DeploySpecError([(field, f"no such file: {path}")], source=source) from None
    except IsADirectoryError:
        raise DeploySpecError([(field, f"is a directory: {path}")], source=source) from None
    except OSError as exc:
        raise DeploySpecError(
            [(field, f"cannot read {path}: {exc.strerror or exc}")], source=source
        ) from None
    if len(data) > MAX_INPUT_BYTES:
        raise DeploySpecError(
            [(field, f"{path} is larger than {MAX_INPUT_BYTES} bytes")], source=source
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DeploySpecError([(field, f"{path} is not UTF-8 text")], source=source) from None


def bundle_from(
    deployment: ModelDeployment, base_dir: str | Path, *, source: str | None = None
) -> DeploymentBundle:
    """Read and check the files ``deployment`` names, relative to ``base_dir``."""
    base = Path(base_dir)
    spec = deployment.spec
    license_text = _read(base, spec.license, "spec.license.file", source)
    try:
        unverified_header(license_text.strip())
    except ModelsealError as exc:
        # Shape only: the vendor's signature is checked where the trust lives
        # (the pod's guard), not by whoever renders manifests.
        raise DeploySpecError(
            [("spec.license.file", f"not a modelseal license: {exc}")], source=source
        ) from None

    envelope_key = None
    if spec.envelope_key is not None:
        envelope_key = _read(base, spec.envelope_key, "spec.envelopeKey.file", source)
        try:
            key = load_public_key(envelope_key.encode("utf-8"))
        except ModelsealError as exc:
            raise DeploySpecError(
                [("spec.envelopeKey.file", f"not a public key: {exc}")], source=source
            ) from None
        if key.kty != "sm2":
            raise DeploySpecError(
                [("spec.envelopeKey.file", f"the gateway's envelope key is SM2, not {key.kty}")],
                source=source,
            )

    trust = None
    if spec.trust is not None:
        text = _read(base, spec.trust, "spec.trust.file", source)
        if spec.trust.file.endswith(".json"):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise DeploySpecError(
                    [("spec.trust.file", "a .json trust store must hold a JSON object")],
                    source=source,
                )
            trust = ("trust.json", text)
        else:
            try:
                load_public_key(text.encode("utf-8"))
            except ModelsealError as exc:
                raise DeploySpecError(
                    [("spec.trust.file", f"not a public key: {exc}")], source=source
                ) from None
            trust = ("trust.pub", text)
    return DeploymentBundle(deployment, license_text, envelope_key, trust)


def load_bundle(spec_path: str | Path) -> DeploymentBundle:
    """Load a spec file and the files it names (relative to the spec's folder)."""
    spec_path = Path(spec_path)
    deployment = load_spec(spec_path)
    return bundle_from(deployment, spec_path.parent, source=str(spec_path))


__all__ = ["MAX_INPUT_BYTES", "DeploymentBundle", "bundle_from", "load_bundle"]
