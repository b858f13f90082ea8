"""``modelseal serve``: a sealed model behind the Open Inference Protocol (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelseal.cli._common import errors_as_exit_codes, fail


def serve(
    model: Annotated[Path, typer.Argument(help="the sealed model (.mseal)")],
    license: Annotated[
        Path,
        typer.Option(
            "--license",
            envvar="MODELSEAL_LICENSE",
            help="license.jwt for this device (a mounted Secret's file: MODELSEAL_LICENSE)",
        ),
    ],
    trust: Annotated[list[Path], typer.Option(help="vendor public key file or directory")],
    handler: Annotated[
        str | None, typer.Option(help="pkg.module:Class; default: built-in ONNX / TorchScript")
    ] = None,
    framework: Annotated[
        str | None,
        typer.Option(
            help="load as: torchscript (runs the archive's code: only on request), "
            "onnxruntime, torch, numpy...; default: the header's hint"
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="model name in URLs; default: the header's model id")
    ] = None,
    envelope_key: Annotated[
        Path | None,
        typer.Option(help="gateway's SM2 public key: seal every model-route response for it"),
    ] = None,
    envelope_aead: Annotated[
        str, typer.Option(help="sm4-gcm (default) or aes-256-gcm for envelope bodies")
    ] = "sm4-gcm",
    feature: Annotated[
        list[str] | None,
        typer.Option(help="PATH_PREFIX=FEATURE: requests under the prefix need the feature"),
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    threads: Annotated[int, typer.Option(min=1, help="predict() threads per worker")] = 4,
    max_body: Annotated[int, typer.Option(help="largest request body in bytes")] = 64 << 20,
    state_dir: Annotated[
        Path | None, typer.Option(help="guard state directory (MODELSEAL_STATE_DIR)")
    ] = None,
) -> None:
    """Serve a sealed model over KServe v2 HTTP; the license is checked at start and per request.

    Example: modelseal serve model.mseal --license license.jwt --trust vendor.pub
    --envelope-key gateway-sm2.pub --port 8080
    """
    from modelseal.serve import ServeConfig
    from modelseal.serve.server import run

    features: dict[str, str] = {}
    for item in feature or []:
        prefix, sep, feat = item.partition("=")
        if not sep or not prefix.startswith("/") or not feat:
            fail(
                f"--feature must be PATH_PREFIX=FEATURE (e.g. /v2/models/m/infer=hd), not {item!r}",
                2,
            )
        features[prefix] = feat
    with errors_as_exit_codes():
        config = ServeConfig(
            model=str(model),
            license=str(license),
            trust=tuple(str(t) for t in trust),
            handler=handler,
            framework=framework,
            name=name,
            envelope_key=str(envelope_key) if envelope_key else None,
            envelope_aead=envelope_aead,
            features=features,
            state_dir=str(state_dir) if state_dir else None,
            max_body=max_body,
            threads=threads,
        )
        run(config, host=host, port=port, workers=workers)
