"""What every command shares: output for humans or JSON, errors as one line.

Exit codes (docs/cli.md): 0 success; 1 unexpected failure; 2 usage error or
unknown algorithm; 3 malformed or unsupported file; 4 integrity failure
(tampered or damaged data, bad signature); 5 key problem (wrong key,
unreadable key file); 6 the framework failed to load the model; 7 a
needed framework is not installed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from modelseal.errors import ModelsealError

console = Console(stderr=True)
out = Console()


def fail(message: str, code: int) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def errors_as_exit_codes() -> Iterator[None]:
    """Turn our exceptions into one line on stderr and a documented exit code."""
    try:
        yield
    except ModelsealError as exc:
        fail(str(exc) or type(exc).__name__, exc.exit_code)
    except FileNotFoundError as exc:
        fail(f"no such file: {exc.filename}", 3)
    except IsADirectoryError as exc:
        fail(f"is a directory: {exc.filename}", 3)
    except PermissionError as exc:
        fail(f"permission denied: {exc.filename}", 3)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "), 1)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextmanager
def progress_bar(description: str, total: int, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A byte progress bar on stderr, shown only for inputs worth waiting on (> 64 MiB)."""
    if not enabled or total < 64 * 1024 * 1024 or not console.is_terminal:
        yield lambda _n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
