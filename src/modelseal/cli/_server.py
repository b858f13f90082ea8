"""What every command group that talks to the control plane shares.

``modelseal admin`` (licensing) and ``modelseal platform`` take the server
and the token the same way (``--server``/``--token-file`` or
``MODELSEAL_SERVER``/``MODELSEAL_TOKEN_FILE``), fail the same way without
them, and print the same tables; one copy keeps them from drifting apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from rich.table import Table

from modelseal._http import call, call_json
from modelseal.cli._common import emit_json, fail, out

Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]
ServerOption = Annotated[
    str | None, typer.Option("--server", envvar="MODELSEAL_SERVER", help="the server's URL")
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option("--token-file", envvar="MODELSEAL_TOKEN_FILE", help="file holding an API token"),
]


@dataclass
class Target:
    """A server URL and an API token: every request carries the token as a bearer."""

    server: str
    token: str

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return self.server.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")

    def get(self, path: str, **params: Any) -> Any:
        return call_json("GET", self.url(path, params), token=self.token)

    def post(
        self,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> Any:
        return call_json(
            "POST",
            self.url(path, params),
            token=self.token,
            json_body=body if body is not None else {},
            headers=headers,
        )

    def patch(self, path: str, body: Any) -> Any:
        return call_json("PATCH", self.url(path), token=self.token, json_body=body)

    def delete(self, path: str) -> Any:
        return call_json("DELETE", self.url(path), token=self.token)

    def text(self, path: str) -> str:
        return call("GET", self.url(path), token=self.token)[1].decode()


def target(ctx: typer.Context) -> Target:
    """The server and token the group's callback stored in ``ctx.obj``, or a usage error."""
    server, token_file = ctx.obj or (None, None)
    if not server:
        fail("no server: give --server URL or set MODELSEAL_SERVER", 2)
    if not token_file:
        fail("no token: give --token-file FILE or set MODELSEAL_TOKEN_FILE", 2)
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        fail(f"cannot read the token file {token_file}: {exc.strerror}", 3)
    return Target(server, token)


def table(rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    grid = Table(title=title)
    for col in columns:
        grid.add_column(col)
    for row in rows:
        grid.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(grid)


def show(data: Any, as_json: bool, columns: list[str], title: str) -> None:
    """``--json``: the server's answer as it is; else a table of ``columns``."""
    if as_json:
        emit_json(data)
    else:
        table(data if isinstance(data, list) else [data], columns, title)


def q(ref: str) -> str:
    """A reference (id, name, license key) as one URL path segment."""
    return quote(ref, safe="")


__all__ = ["Json", "Target", "q", "show", "table", "target"]
