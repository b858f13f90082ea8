"""``modelseal seal`` / ``inspect`` / ``verify``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from modelseal.cli._common import emit_json, errors_as_exit_codes, fail, out, progress_bar
from modelseal.crypto import ContentKey
from modelseal.sealed import DEFAULT_CHUNK_SIZE, SealedReader, read_header, seal_path


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
    key_file: Annotated[
        Path | None, typer.Option(help="existing content key (JWK) to seal with")
    ] = None,
    new_key_out: Annotated[
        Path | None, typer.Option(help="generate a content key and save it here (mode 0600)")
    ] = None,
    aead: Annotated[str, typer.Option(help="aes-256-gcm (default) or sm4-gcm")] = "aes-256-gcm",
    model_id: Annotated[str | None, typer.Option(help="the vendor's model id")] = None,
    framework: Annotated[
        str | None,
        typer.Option(
            help="framework hint (default: detected): safetensors, torch, "
            "torchscript, onnx, paddle, bytes"
        ),
    ] = None,
    chunk_size: Annotated[
        int, typer.Option(help="bytes per chunk (power of two)")
    ] = DEFAULT_CHUNK_SIZE,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Encrypt a model file or directory into one .mseal container.

    Example: modelseal seal model.safetensors --out model.mseal --new-key-out model.key
    """
    with errors_as_exit_codes():
        if (key_file is None) == (new_key_out is None):
            fail("give exactly one of --key-file or --new-key-out", 2)
        if new_key_out is not None and new_key_out.exists():
            fail(f"{new_key_out} exists; refusing to overwrite a content key", 2)
        key = ContentKey.load(key_file) if key_file is not None else ContentKey.generate()
        total = _size_of(path)
        started = time.perf_counter()
        with progress_bar("sealing", total, enabled=not as_json) as advance:
            header = seal_path(
                path,
                out_path,
                key,
                aead=aead,
                model_id=model_id,
                framework=framework,
                chunk_size=chunk_size,
                progress=advance,
            )
        elapsed = time.perf_counter() - started
        if new_key_out is not None:
            key.save(new_key_out)
        info = {
            "out": str(out_path),
            "key_id": key.key_id,
            "key_file": str(new_key_out or key_file),
            "aead": header.aead,
            "framework": header.framework,
            "entries": len(header.entries),
            "payload_size": header.payload_size,
            "seconds": round(elapsed, 3),
        }
        if as_json:
            emit_json(info)
        else:
            out.print(
                f"[green]sealed[/] {path} -> {out_path} ({_human(header.payload_size)}, "
                f"{len(header.entries)} file(s), {header.aead}, {header.framework}) "
                f"in {elapsed:.2f}s; key id {key.key_id}"
            )
            if new_key_out is not None:
                out.print(f"content key saved to {new_key_out}: keep it secret")


def inspect(
    file: Annotated[Path, typer.Argument(help="a .mseal file")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show the public header of a sealed model (no key needed, nothing verified).

    Example: modelseal inspect model.mseal --json
    """
    with errors_as_exit_codes():
        header = read_header(file)
        data = header.to_json()
        data["chunks"] = header.chunk_count
        data["file_size"] = file.stat().st_size
        if as_json:
            emit_json(data)
            return
        table = Table(title=f"{file} (unverified public header)", show_header=False)
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
            table.add_row(name, str(data[name]))
        out.print(table)
        entries = Table("path", "size")
        for e in header.entries:
            entries.add_row(e.path, _human(e.size))
        out.print(entries)


def verify(
    file: Annotated[Path, typer.Argument(help="a .mseal file")],
    key_file: Annotated[Path, typer.Option(help="the content key (JWK)")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Authenticate every chunk of a sealed model; decrypts in memory, writes nothing.

    Example: modelseal verify model.mseal --key-file model.key
    """
    with errors_as_exit_codes():
        key = ContentKey.load(key_file)
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
                    "chunks": header.chunk_count,
                    "payload_size": header.payload_size,
                    "seconds": round(elapsed, 3),
                }
            )
        else:
            out.print(
                f"[green]ok[/] {file}: {header.chunk_count} chunk(s), "
                f"{_human(header.payload_size)} authenticated in {elapsed:.2f}s"
            )
