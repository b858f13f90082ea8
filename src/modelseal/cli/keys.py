"""``modelseal keys``: vendor signing key pairs."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelseal.cli._common import (
    ForceOpt,
    JsonOpt,
    console,
    emit_json,
    errors_as_exit_codes,
    no_stdio,
    out,
)
from modelseal.crypto import generate_private_key
from modelseal.errors import InvalidArgumentError

app = typer.Typer(help="Create and inspect signing key pairs.", no_args_is_help=True)


class KeyAlg(StrEnum):
    ed25519 = "ed25519"
    rsa = "rsa"
    sm2 = "sm2"


@app.command("generate")
def generate(
    alg: Annotated[KeyAlg, typer.Option("--alg", help="key algorithm")] = KeyAlg.ed25519,
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="folder for the key files (created if missing)")
    ] = Path(),
    name: Annotated[str, typer.Option(help="file name stem: NAME.pem and NAME.pub")] = "vendor",
    rsa_bits: Annotated[int, typer.Option(min=2048, max=16384, help="RSA modulus size")] = 3072,
    passphrase_env: Annotated[
        str | None,
        typer.Option(help="encrypt the private key with the passphrase in this env variable"),
    ] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    legacy_out: Annotated[
        Path | None, typer.Option("--out", hidden=True, help="old name of --out-dir")
    ] = None,
) -> None:
    """Generate a signing key pair: NAME.pem (PKCS#8, mode 0600) and NAME.pub (SPKI).

    Example: modelseal keys generate --alg sm2 --out-dir keys/
    """
    from modelseal._fs import check_output

    with errors_as_exit_codes():
        if legacy_out is not None:
            # --out is a file everywhere else; a folder here was a trap
            console.print("[yellow]warning:[/] --out is deprecated here; use --out-dir")
            out_dir = legacy_out
        no_stdio(out_dir, "--out-dir", "a key pair is two files")
        if not name or "/" in name or name in (".", ".."):
            raise InvalidArgumentError(f"--name {name!r} must be a plain file name stem")
        priv, pub = out_dir / f"{name}.pem", out_dir / f"{name}.pub"
        for path in (priv, pub):
            check_output(path, overwrite=force)
        passphrase = None
        if passphrase_env:
            passphrase = os.environ.get(passphrase_env)
            if not passphrase:
                raise InvalidArgumentError(
                    f"environment variable {passphrase_env} is empty or unset"
                )
        key = generate_private_key(alg.value, rsa_bits=rsa_bits)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from modelseal._fs import os_error

            raise os_error(priv, exc) from None
        key.save(priv, passphrase=passphrase, overwrite=force)
        key.public_key().save(pub, overwrite=force)
        info = {
            "ok": True,
            "alg": alg.value,
            "algorithms": list(key.algorithms),
            "key_id": key.key_id,
            "private_key": str(priv),
            "public_key": str(pub),
            "written": [str(priv), str(pub)],
        }
        if as_json:
            emit_json(info)
        else:
            out.print(f"[green]generated[/] {alg.value} key pair, key id [bold]{key.key_id}[/]")
            out.print(
                f"wrote {escape(str(priv))}: the private signing key (mode 0600; keep it secret)"
                f"\nwrote {escape(str(pub))}: the public key (give it to devices as --trust)"
            )
