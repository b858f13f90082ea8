"""The image spec: ``apiVersion: modelseal/v1``, ``kind: ModelImage``.

What goes into a model image, in one small YAML file next to the model:

```yaml
apiVersion: modelseal/v1
kind: ModelImage
metadata: {name: demo}
spec:
  tag: localhost/acme/demo:1.0.0
  model: {file: model.mseal}          # or {mountPath: /models/demo.mseal}: mounted at run time
  handler: handlers.clf:Classifier    # optional; default: the built-in ONNX/TorchScript handler
  handlerPaths: [handlers]            # files/folders put on the image's PYTHONPATH
  name: demo                          # optional: the model's name in URLs
  runtimes: [onnx]                    # optional: default from the sealed header's framework
  trust: {file: vendor.pub}           # optional: the vendor's public key, built in
  port: 8080
```

Parsed as strictly as the deployment spec (unknown fields, coercions and
duplicate keys are refused; every error names its field), with the same
YAML reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationError, model_validator

from modelseal.deploy.spec import (
    MAX_SPEC_BYTES,
    AbsolutePath,
    Dns1035Label,
    FileRef,
    Port,
    _image,
    _problems,
    _Strict,
    _UniqueKeyLoader,
)
from modelseal.image.errors import ImageSpecError

#: Runtimes an image can carry, by the project's extra that provides them.
#: torch and paddle are large: only when asked for by name (never inferred).
RUNTIMES: Final = ("onnx", "safetensors", "torch", "paddle")
#: What the sealed header's framework hint implies when ``runtimes`` is not given.
RUNTIMES_FOR_FRAMEWORK: Final[dict[str, tuple[str, ...]]] = {
    "onnx": ("onnx",),
    "safetensors": ("safetensors",),
    "bytes": (),
}

_HANDLER_PART = r"[A-Za-z_][A-Za-z0-9_]*"


def _handler(value: str) -> str:
    import re

    if not re.fullmatch(rf"{_HANDLER_PART}(\.{_HANDLER_PART})*:{_HANDLER_PART}", value):
        raise ValueError(f"{value!r} is not pkg.module:Class")
    return value


class ModelSource(_Strict):
    """Exactly one of ``file`` (built in) and ``mountPath`` (mounted at run time)."""

    file: str | None = None
    mount_path: AbsolutePath | None = None

    @model_validator(mode="after")
    def _one(self) -> ModelSource:
        if (self.file is None) == (self.mount_path is None):
            raise ValueError("needs exactly one of file or mountPath")
        if self.file is not None and not self.file:
            raise ValueError("file: must name a file")
        return self


class ImageMetadata(_Strict):
    name: Dns1035Label


class ImageSpecBody(_Strict):
    tag: Annotated[str, AfterValidator(_image)] | None = None
    model: ModelSource
    handler: Annotated[str, AfterValidator(_handler)] | None = None
    handler_paths: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    framework: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    runtimes: list[Literal["onnx", "safetensors", "torch", "paddle"]] | None = None
    trust: FileRef | None = None
    port: Port = 8080
    #: An image that may run without the gateway's key answers in the clear:
    #: only for a model that needs no protection from whoever can reach it.
    allow_plain: bool = False


class ModelImage(_Strict):
    api_version: Literal["modelseal/v1"]
    kind: Literal["ModelImage"]
    metadata: ImageMetadata
    spec: ImageSpecBody


def parse_image_spec(text: str | bytes, *, source: str | None = None) -> ModelImage:
    """One YAML document of kind ModelImage; :class:`ImageSpecError` naming each bad field."""
    if len(text) > MAX_SPEC_BYTES:
        raise ImageSpecError(f"{source or 'spec'}: larger than {MAX_SPEC_BYTES} bytes")
    prefix = f"{source}: " if source else ""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ImageSpecError(f"{prefix}not UTF-8 text") from None
    try:
        docs = [d for d in yaml.load_all(text, Loader=_UniqueKeyLoader) if d is not None]
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as exc:
        detail = str(exc).replace("\n", " ")
        raise ImageSpecError(f"{prefix}not valid YAML: {detail}") from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ImageSpecError(f"{prefix}expected one YAML mapping (kind: ModelImage)")
    try:
        return ModelImage.model_validate(docs[0])
    except ValidationError as exc:
        problems = [f"{path}: {msg}" if path else msg for path, msg in _problems(exc)]
        raise ImageSpecError(prefix + "; ".join(problems[:10])) from None


def load_image_spec(path: str | Path) -> ModelImage:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageSpecError(f"{path}: {exc.strerror or exc}") from None
    return parse_image_spec(data, source=str(path))


__all__ = [
    "RUNTIMES",
    "RUNTIMES_FOR_FRAMEWORK",
    "ImageSpecBody",
    "ModelImage",
    "ModelSource",
    "load_image_spec",
    "parse_image_spec",
]
