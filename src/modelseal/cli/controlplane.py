"""``modelseal controlplane``: run the license server, create its schema and first vendor.

Needs the ``server`` extra; imported lazily so the rest of the CLI works
without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from modelseal.cli._common import errors_as_exit_codes, fail, out

app = typer.Typer(
    help="The license server: orders, activation, heartbeats (docs/controlplane.md).",
    invoke_without_command=True,
)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="SQLite database and master key (default ~/.local/share)"),
]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="postgresql://... (default: SQLite)")
]


def _settings(**overrides: Any) -> Any:
    try:
        import alembic  # noqa: F401
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
        import uvicorn  # noqa: F401

        from modelseal.controlplane.settings import Settings
    except ImportError as exc:
        fail(
            f"the control plane needs the server extra: pip install 'modelseal[server]' ({exc})", 7
        )
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.callback()
def serve(
    ctx: typer.Context,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8400)")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=64, help="worker processes")] = None,
    public_url: Annotated[
        str | None, typer.Option(help="URL devices use to reach this server (heartbeats)")
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="show the settings (secrets masked) and exit")
    ] = False,
) -> None:
    """Serve the control plane (migrations run first).

    Example: modelseal controlplane --data-dir /var/lib/modelseal --port 8400
    """
    if ctx.invoked_subcommand is not None:
        return
    with errors_as_exit_codes():
        settings = _settings(
            data_dir=data_dir,
            database_url=database_url,
            host=host,
            port=port,
            workers=workers,
            public_url=public_url,
        )
        if print_config:
            out.print_json(json.dumps(settings.masked()))
            return
        import uvicorn

        from modelseal.controlplane import db
        from modelseal.controlplane.secretbox import load_or_create_master_key

        load_or_create_master_key(settings.master_key_path)
        engine = db.make_engine(settings)
        db.migrate(engine)
        engine.dispose()
        # workers re-read the settings from the environment (uvicorn --factory)
        for name, value in settings.model_dump(mode="json").items():
            if value is not None:
                os.environ[f"MODELSEAL_{name.upper()}"] = str(value)
        uvicorn.run(
            "modelseal.controlplane.app:create_app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level="warning",
            access_log=False,
        )


@app.command("migrate")
def migrate(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Create or upgrade the schema (one transaction: never half-migrated).

    Example: modelseal controlplane migrate --database-url postgresql://127.0.0.1/licensing
    """
    with errors_as_exit_codes():
        settings = _settings(data_dir=data_dir, database_url=database_url)
        from modelseal.controlplane import db

        engine = db.make_engine(settings)
        revision = db.migrate(engine)
        engine.dispose()
        out.print(f"schema at revision {revision}")


@app.command("init")
def init(
    vendor: Annotated[str, typer.Option(help="the vendor (tenant) name, also licenses' iss")],
    token_out: Annotated[
        Path, typer.Option("--token-out", help="file for the owner API token (mode 0600)")
    ],
    alg: Annotated[str, typer.Option(help="signing key type: ed25519, rsa or sm2")] = "ed25519",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    admin_user: Annotated[
        str, typer.Option("--admin-user", help="username of the first owner (a person)")
    ] = "owner",
    admin_password_file: Annotated[
        Path | None,
        typer.Option(
            "--admin-password-file",
            help="file holding the first owner's password (else one is generated, printed once)",
        ),
    ] = None,
) -> None:
    """Create the schema, a vendor with a fresh signing key, its owner API token, and its
    first owner user (who enrols TOTP at first login).

    The token is written to --token-out only (0600), printed nowhere. The
    owner's password is read from --admin-password-file, or generated and
    printed once.

    Example: modelseal controlplane init --vendor acme --token-out owner.token
    """
    with errors_as_exit_codes():
        if alg not in ("ed25519", "rsa", "sm2"):
            fail(f"unknown algorithm {alg!r}; choose ed25519, rsa or sm2", 2)
        if token_out.exists():
            fail(f"{token_out} exists; refusing to overwrite a token file", 2)
        password = None
        if admin_password_file is not None:
            try:
                password = admin_password_file.read_text().rstrip("\r\n")
            except OSError as exc:
                fail(f"cannot read {admin_password_file}: {exc.strerror}", 3)
            if len(password) < 12:
                fail("the admin password needs at least 12 characters", 2)
        settings = _settings(data_dir=data_dir, database_url=database_url)
        from modelseal.controlplane import db
        from modelseal.controlplane.secretbox import SecretBox, load_or_create_master_key
        from modelseal.controlplane.services import audit, people
        from modelseal.controlplane.services.vendors import active_key_row, init_vendor

        box = SecretBox(load_or_create_master_key(settings.master_key_path))
        engine = db.make_engine(settings)
        db.migrate(engine)
        sessions = db.session_factory(engine)
        audit.install(sessions, box)
        # the file is created first (O_EXCL) and filled only once the vendor commits
        fd = os.open(token_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with db.transaction(sessions) as session:
                audit.bind(session, actor={"kind": "system", "command": "controlplane init"})
                row, token = init_vendor(session, box, name=vendor, kty=alg)
                kid = active_key_row(session, row.id).kid
                _, shown = people.init_owner(
                    session, row.id, username=admin_user, password=password
                )
            os.write(fd, (token + "\n").encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            token_out.unlink(missing_ok=True)
            raise
        os.close(fd)
        engine.dispose()
        out.print(f"vendor {vendor!r} created (signing key {kid}); owner token in {token_out}")
        if shown is not None:
            out.print(
                f"owner user {admin_user!r}, password (shown once): {shown}",
                highlight=False,
                soft_wrap=True,
            )
        else:
            out.print(f"owner user {admin_user!r}, password from {admin_password_file}")
        out.print("log in at POST /v1/session and enrol TOTP (POST /v1/session/totp)")
