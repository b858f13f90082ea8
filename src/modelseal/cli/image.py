"""``modelseal image``: build a model service into an OCI image with podman (docs/deploy.md).

The image library loads only when an image command runs, so the rest of
the CLI works without podman or the ``deploy`` extra.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Annotated

import typer

from modelseal.cli._common import (
    ForceOpt,
    JsonOpt,
    console,
    emit_json,
    errors_as_exit_codes,
    out,
    write_output,
)
from modelseal.cli.deploy import DataDirOpt
from modelseal.errors import InvalidArgumentError

app = typer.Typer(
    help="Container images of sealed models: build them, their base, a device request.",
    no_args_is_help=True,
)


@app.callback()
def _group() -> None:
    """Container images of sealed models: build them, their base, a device request."""


@app.command("build")
def build(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="SPEC.yaml|MODEL.mseal",
            help="an image spec (kind: ModelImage) or a sealed model to build in",
        ),
    ],
    tag: Annotated[
        str | None,
        typer.Option(help="NAME:VERSION, e.g. localhost/acme/demo:1.0.0 (required for a model)"),
    ] = None,
    handler: Annotated[
        str | None, typer.Option(help="pkg.module:Class (model form); default: built in")
    ] = None,
    handler_path: Annotated[
        list[Path] | None,
        typer.Option(help="file or folder put on the image's PYTHONPATH (model form; repeat)"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="the model's name in URLs (model form)")] = None,
    runtime: Annotated[
        list[str] | None,
        typer.Option(
            help="onnx, safetensors, torch, paddle (model form; default: from the model's header)"
        ),
    ] = None,
    trust: Annotated[
        Path | None, typer.Option(help="the vendor's public key to build in (model form)")
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option(help="Debian mirror for the base image (default: this machine's apt sources)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build an image that serves a sealed model; no license or key goes into it.

    Example: modelseal image build model.mseal --tag localhost/acme/demo:1.0.0 --trust vendor.pub
    """
    with errors_as_exit_codes():
        from modelseal.image.build import ImageRecipe, build_image, recipe_from_spec, runtimes_for
        from modelseal.image.spec import RUNTIMES, load_image_spec

        if source.suffix in (".yaml", ".yml"):
            given = {
                "--handler": handler,
                "--handler-path": handler_path,
                "--name": name,
                "--runtime": runtime,
                "--trust": trust,
            }
            extra = [option for option, value in given.items() if value]
            if extra:
                raise InvalidArgumentError(
                    f"{', '.join(extra)}: with a spec, say it in the spec (spec.handler, ...)"
                )
            recipe = recipe_from_spec(load_image_spec(source), source.resolve().parent, tag=tag)
        else:
            if tag is None:
                raise InvalidArgumentError("--tag NAME:VERSION is required when building a model")
            if not source.is_file():
                raise _missing(source)
            for item in runtime or []:
                if item not in RUNTIMES:
                    raise InvalidArgumentError(
                        f"--runtime {item!r}: choose from {', '.join(RUNTIMES)}"
                    )
            from modelseal.image.spec import parse_image_spec

            # Validate the tag and handler with the spec's own rules.
            parse_image_spec(_model_spec_yaml(tag, handler), source="command line")
            recipe = ImageRecipe(
                tag=tag,
                model_file=source.resolve(),
                handler=handler,
                handler_paths=tuple(p.resolve() for p in handler_path or []),
                name=name,
                runtimes=tuple(runtime) if runtime else runtimes_for(source, None),
                trust_file=trust.resolve() if trust else None,
            )
            for path in recipe.handler_paths:
                if not path.exists():
                    raise _missing(path)
            if recipe.trust_file is not None and not recipe.trust_file.is_file():
                raise _missing(recipe.trust_file)
        if not as_json:
            console.print(f"building {recipe.tag} (runtimes: {', '.join(recipe.runtimes) or '-'})")
        built = build_image(
            recipe,
            mirror=mirror,
            progress=None if as_json else lambda line: console.print(line, markup=False),
        )
        if as_json:
            emit_json({"ok": True, **built.to_json()})
        else:
            out.print(f"built {built.tag}")
            out.print(f"image id: {built.image_id}")
            out.print(f"digest:   {built.digest}")
            out.print(f"size:     {built.size_bytes / 1e6:.0f} MB")
            out.print(f"reference: {built.tag}@{built.digest}")


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))


def _model_spec_yaml(tag: str, handler: str | None) -> str:
    import json

    spec: dict[str, object] = {"tag": tag, "model": {"file": "model.mseal"}}
    if handler is not None:
        spec["handler"] = handler
    return json.dumps(
        {
            "apiVersion": "modelseal/v1",
            "kind": "ModelImage",
            "metadata": {"name": "cli"},
            "spec": spec,
        }
    )


@app.command("base")
def base(
    rebuild: Annotated[bool, typer.Option(help="build it again even if cached")] = False,
    mirror: Annotated[
        str | None,
        typer.Option(help="Debian mirror (default: this machine's apt sources)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make sure the base image is in podman's store: loaded from the cache, else built.

    Example: modelseal image base
    """
    with errors_as_exit_codes():
        from modelseal.image.base import ensure_base_image
        from modelseal.image.podman import Podman

        image = ensure_base_image(
            Podman(),
            mirror=mirror,
            rebuild=rebuild,
            progress=None if as_json else lambda line: console.print(line, markup=False),
        )
        if as_json:
            emit_json(
                {
                    "ok": True,
                    "ref": image.ref,
                    "image_id": image.image_id,
                    "source": image.source,
                    "cache_file": str(image.cache_file),
                }
            )
        else:
            out.print(f"{image.ref} ({image.source}; cache: {image.cache_file})")


@app.command("request")
def request(
    image: Annotated[str, typer.Argument(help="the model image (NAME:VERSION)")],
    deployment: Annotated[
        str, typer.Option(help="NAMESPACE/NAME of the podman deployment it will run as")
    ],
    out_path: Annotated[
        Path, typer.Option("--out", help="where to write the request (- for standard output)")
    ],
    label: Annotated[str, typer.Option(help="a name for the device the vendor sees")] = "",
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
) -> None:
    """An activation request made inside IMAGE as the podman backend will run it.

    A license issued from it opens in that deployment's container on this
    machine, applied with the same --data-dir (docs/deploy.md, "Device binding in a container").

    Example: modelseal image request localhost/acme/demo:1.0.0 --deployment models/demo
    --out request.json
    """
    with errors_as_exit_codes():
        namespace, sep, name = deployment.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise InvalidArgumentError("--deployment must be NAMESPACE/NAME, e.g. models/demo")
        from modelseal.cli.deploy import _data_dir
        from modelseal.deploy.backends.podman import PodmanBackend

        # The same state directory as `deploy apply --backend podman`: it holds
        # the key the container's hostname is derived from.
        backend = PodmanBackend(state_dir=_data_dir(data_dir) / "podman")
        text = backend.device_request(namespace, name, image, label=label)
        where = write_output(out_path, text.encode(), force=force, mode=0o600)
        if where != "standard output":
            console.print(f"wrote {where} (mode 0600: it holds the component secrets)")
