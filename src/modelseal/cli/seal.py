"""``modelseal seal`` / ``inspect`` / ``verify``."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from modelseal.cli._common import (
    ForceOpt,
    JsonOpt,
    emit_json,
    errors_as_exit_codes,
    no_stdio,
    out,
    progress_bar,
)
from modelseal.crypto import ContentKey
from modelseal.errors import InvalidArgumentError, OutputExistsError
from modelseal.sealed import DEFAULT_CHUNK_SIZE, SealedReader, read_header


class Aead(StrEnum):
    aes = "aes-256-gcm"
    sm4 = "sm4-gcm"


class Hint(StrEnum):
    safetensors = "safetensors"
    torch = "torch"
    torchscript = "torchscript"
    onnx = "onnx"
    paddle = "paddle"
    bytes = "bytes"


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def seal(
    path: Annotated[Path, typer.Argument(help="model file or directory to seal")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="the .mseal file to write")],
    content_key: Annotated[
        Path | None,
        typer.Option("--content-key", "--key-file", help="existing content key (JWK) to seal with"),
    ] = None,
    new_key_out: Annotated[
        Path | None,
        typer.Option(help="generate a content key and save it here (mode 0600), before sealing"),
    ] = None,
    aead: Annotated[Aead, typer.Option(help="payload encryption")] = Aead.aes,
    model_id: Annotated[
        str | None, typer.Option(help="the vendor's model id (licenses name it)")
    ] = None,
    framework: Annotated[
        Hint | None,
        typer.Option(help="framework hint (default: detected from names and magic bytes)"),
    ] = None,
    chunk_size: Annotated[
        int,
        typer.Option(min=1024, max=64 * 1024 * 1024, help="bytes per chunk (a power of two)"),
    ] = DEFAULT_CHUNK_SIZE,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Encrypt a model file or directory into one .mseal container.

    The content key is written before the container, so there is never a
    sealed file without its key; existing files are kept unless --force.

    Example: modelseal seal model.safetensors --out model.mseal --new-key-out model.key
    """
    from modelseal import api

    with errors_as_exit_codes():
        if (content_key is None) == (new_key_out is None):
            raise InvalidArgumentError("give exactly one of --content-key or --new-key-out")
        no_stdio(out_path, "--out", "the container is written to a file and renamed when complete")
        no_stdio(new_key_out, "--new-key-out", "a content key is kept in a file")
        no_stdio(content_key, "--content-key", "give the key file")
        if chunk_size & (chunk_size - 1):
            raise InvalidArgumentError(f"--chunk-size {chunk_size} is not a power of two")
        if not path.exists():
            raise FileNotFoundError(2, "no such file", str(path))
        if new_key_out is not None and _same(new_key_out, out_path):
            raise OutputExistsError("--new-key-out and --out name the same file")
        total = _size_of(path)
        started = time.perf_counter()
        with progress_bar("sealing", total, enabled=not as_json) as advance:
            key = api.seal(
                path,
                out_path,
                key=content_key,
                key_out=new_key_out,
                aead=aead.value,
                model_id=model_id,
                framework=framework.value if framework is not None else None,
                chunk_size=chunk_size,
                progress=advance,
                overwrite=force,
            )
        elapsed = time.perf_counter() - started
        header = read_header(out_path)
        written = [str(out_path)] + ([str(new_key_out)] if new_key_out is not None else [])
        info = {
            "ok": True,
            "out": str(out_path),
            "written": written,
            "key_id": key.key_id,
            "key_file": str(new_key_out or content_key),
            "aead": header.aead,
            "framework": header.framework,
            "entries": len(header.entries),
            "payload_size": header.payload_size,
            "seconds": round(elapsed, 3),
        }
        if as_json:
            emit_json(info)
            return
        out.print(
            f"[green]sealed[/] {escape(str(path))} -> {escape(str(out_path))} "
            f"({_human(header.payload_size)}, {len(header.entries)} file(s), {header.aead}, "
            f"{header.framework}) in {elapsed:.2f}s; key id {key.key_id}"
        )
        if new_key_out is not None:
            out.print(
                f"wrote {escape(str(new_key_out))}: the content key (mode 0600), the only "
                "thing that opens the container: keep it secret and backed up"
            )


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def inspect(
    file: Annotated[Path, typer.Argument(help="a .mseal file")],
    as_json: JsonOpt = False,
) -> None:
    """Show the public header of a sealed model (no key needed, nothing verified).

    Example: modelseal inspect model.mseal --json
    """
    with errors_as_exit_codes():
        no_stdio(file, "FILE", "the header is read from a file")
        header = read_header(file)
        data = header.to_json()
        data["chunks"] = header.chunk_count
        data["file_size"] = file.stat().st_size
        if as_json:
            emit_json({"ok": True, **data})
            return
        table = Table(title=f"{escape(str(file))} (unverified public header)", show_header=False)
        for name in (
            "model_id",
            "framework",
            "kind",
            "aead",
            "chunk_size",
            "chunks",
            "payload_size",
            "key_id",
            "created_at",
        ):
            value = data[name]
            table.add_row(name, "-" if value is None else escape(str(value)))
        out.print(table)
        entries = Table("path", "size")
        for e in header.entries:
            entries.add_row(escape(e.path), _human(e.size))
        out.print(entries)


def verify(
    file: Annotated[Path, typer.Argument(help="a .mseal file")],
    content_key: Annotated[
        Path, typer.Option("--content-key", "--key-file", help="the content key (JWK)")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Authenticate every chunk of a sealed model; decrypts in memory, writes nothing.

    Example: modelseal verify model.mseal --content-key model.key
    """
    with errors_as_exit_codes():
        no_stdio(file, "FILE", "the container is read from a file")
        key = ContentKey.load(content_key)
        started = time.perf_counter()
        with SealedReader(file, key) as reader:
            with progress_bar("verifying", reader.header.payload_size, enabled=not as_json) as adv:
                reader.verify(progress=adv)
            header = reader.header
        elapsed = time.perf_counter() - started
        if as_json:
            emit_json(
                {
                    "ok": True,
                    "file": str(file),
                    "key_id": header.key_id,
                    "chunks": header.chunk_count,
                    "payload_size": header.payload_size,
                    "seconds": round(elapsed, 3),
                }
            )
        else:
            out.print(
                f"[green]ok[/] {escape(str(file))}: {header.chunk_count} chunk(s), "
                f"{_human(header.payload_size)} authenticated in {elapsed:.2f}s"
            )
