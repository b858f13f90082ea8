"""What one model service is: a plain, JSON-serializable description.

Worker processes are started by import string, so the configuration
travels to them through one environment variable as JSON; no pickled
objects, nothing a worker could not rebuild itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Final

ENV: Final = "MODELSEAL_SERVE_CONFIG"
DEFAULT_MAX_BODY: Final = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServeConfig:
    model: str
    license: str
    trust: tuple[str, ...]
    handler: str | None = None
    #: passed to modelseal's loader; "torchscript" is the explicit consent to run
    #: a TorchScript archive (code), which is never loaded by default
    framework: str | None = None
    name: str | None = None
    envelope_key: str | None = None
    envelope_aead: str = "sm4-gcm"
    #: path prefix -> feature the license must grant (longest prefix wins)
    features: dict[str, str] = field(default_factory=dict)
    state_dir: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    #: threads running predict(); ONNX Runtime and torch release the GIL
    threads: int = 4

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServeConfig:
        raw = (environ if environ is not None else dict(os.environ)).get(ENV)
        if not raw:
            raise RuntimeError(f"{ENV} is not set: workers are started by `modelseal serve`")
        data: dict[str, Any] = json.loads(raw)
        data["trust"] = tuple(data["trust"])
        return cls(**data)
