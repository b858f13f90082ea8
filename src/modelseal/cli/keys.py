"""``modelseal keys``: vendor signing key pairs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from modelseal.cli._common import emit_json, errors_as_exit_codes, fail, out
from modelseal.crypto import generate_private_key

app = typer.Typer(help="Create and inspect signing key pairs.", no_args_is_help=True)


@app.command("generate")
def generate(
    alg: Annotated[str, typer.Option("--alg", help="ed25519 (default), rsa or sm2")] = "ed25519",
    out_dir: Annotated[Path, typer.Option("--out", help="directory for the key files")] = Path(),
    name: Annotated[str, typer.Option(help="file name stem: NAME.pem and NAME.pub")] = "vendor",
    rsa_bits: Annotated[int, typer.Option(help="RSA modulus size (>= 2048)")] = 3072,
    passphrase_env: Annotated[
        str | None,
        typer.Option(help="encrypt the private key with the passphrase in this env variable"),
    ] = None,
    force: Annotated[bool, typer.Option(help="overwrite existing files")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Generate a signing key pair: NAME.pem (PKCS#8, mode 0600) and NAME.pub (SPKI).

    Example: modelseal keys generate --alg sm2 --out keys/
    """
    with errors_as_exit_codes():
        key = generate_private_key(alg, rsa_bits=rsa_bits)
        out_dir.mkdir(parents=True, exist_ok=True)
        priv, pub = out_dir / f"{name}.pem", out_dir / f"{name}.pub"
        for path in (priv, pub):
            if path.exists() and not force:
                fail(f"{path} exists (use --force to overwrite)", 2)
        passphrase = None
        if passphrase_env:
            passphrase = os.environ.get(passphrase_env)
            if not passphrase:
                fail(f"environment variable {passphrase_env} is empty or unset", 2)
        key.save(priv, passphrase=passphrase)
        key.public_key().save(pub)
        info = {
            "alg": alg,
            "algorithms": list(key.algorithms),
            "key_id": key.key_id,
            "private_key": str(priv),
            "public_key": str(pub),
        }
        if as_json:
            emit_json(info)
        else:
            out.print(f"[green]generated[/] {alg} key pair, key id [bold]{key.key_id}[/]")
            out.print(f"  private: {priv} (keep secret)\n  public:  {pub}")
