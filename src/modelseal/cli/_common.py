"""The conventions every ``modelseal`` command stands on (docs/cli.md, "Conventions").

- **One place maps errors to exit codes and messages**: :func:`exit_code_for`
  and :func:`report`. Every failure ends as one ``error: ...`` line on stderr
  and the documented code; with ``--json`` also as one JSON document on
  stdout (``{"ok": false, "error": {...}}``), so a script reads the same
  stream on success and failure. No traceback reaches the user; set
  ``MODELSEAL_DEBUG=1`` to see one for an unexpected failure (exit 1).
- **Outputs**: nothing existing is replaced without ``--force``, an output is
  never one of the inputs (forced or not), files appear atomically (see
  ``modelseal._fs``), and the success line names every file written.
- ``-`` means standard input or output where a stream makes sense
  (:func:`read_text_input`, :func:`write_output`); where it does not, the
  command refuses it with a usage error.
- Usage errors (missing or invalid options) are one line too, wrapped by
  :func:`main`; output is never hard-wrapped when piped.

New command groups reuse these: wrap a command body in
``errors_as_exit_codes()`` (or just raise a ``ModelsealError``), take
``ForceOpt`` / ``JsonOpt``, and write files with :func:`write_output`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

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

from modelseal._entry import _Interrupted, _on_sigint
from modelseal.errors import FormatError, InvalidArgumentError, ModelsealError


def _click_modules() -> list[Any]:
    """The click Typer runs on: its vendored copy (typer >= 0.26) and/or click itself."""
    mods = []
    try:
        from typer import _click as vendored

        mods.append(vendored)
    except ImportError:  # pragma: no cover - older typer
        pass
    try:
        import click as upstream

        mods.append(upstream)
    except ImportError:  # pragma: no cover
        pass
    return mods


def _classes(name: str) -> tuple[type[BaseException], ...]:
    return tuple(
        getattr(m.exceptions, name) for m in _click_modules() if hasattr(m.exceptions, name)
    )


_USAGE = _classes("UsageError")
_CLICK = _classes("ClickException")
_ABORT = _classes("Abort")
_EXIT: tuple[type[BaseException], ...] = (typer.Exit, *_classes("Exit"))


def _console(stream: Any, *, stderr: bool = False) -> Console:
    # On a terminal rich wraps to its width; piped, lines are never broken
    # (a log line or a grep must see one message per line).
    tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(stderr=stderr, soft_wrap=True, width=None if tty else 4096, highlight=False)


console = _console(sys.stderr, stderr=True)
out = _console(sys.stdout)

#: Set by :func:`main` when ``--json`` is on the command line.
json_mode = False


def _json_flag(value: bool) -> bool:
    # also set when a command runs without main() (Typer's CliRunner)
    global json_mode
    json_mode = bool(value)
    return value


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        callback=_json_flag,
        help="one JSON document on stdout, on success and on failure",
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="replace existing output files")]

# --- exit codes: the one table -------------------------------------------------

#: Exit codes that no error class carries (docs/cli.md, "Exit codes").
EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_UNLOCK = 20
EXIT_INTERRUPTED = 130

#: Guard refusals that carry only a reason code, and the reasons no error class names.
_EXTRA_REASONS = {
    "license_unreadable": EXIT_INPUT,
    "not_configured": EXIT_USAGE,
    "no_heartbeat_client": EXIT_USAGE,
    "unlock_rate_limited": EXIT_UNLOCK,
    "unlock_invalid": EXIT_UNLOCK,
}


def _subclasses(cls: type) -> Iterator[type]:
    sub: type
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def reason_exit_codes() -> dict[str, int]:
    """Exit code per audit reason code, from the license error classes themselves.

    The Guard tells callers only "not licensed" plus a reason code; the CLI
    must still give one exit code per failure class, like ``license verify``.
    """
    from modelseal.license.errors import LicenseError

    table: dict[str, int] = {}
    for cls in _subclasses(LicenseError):
        reason = cls.__dict__.get("reason")
        if isinstance(reason, str) and "exit_code" in cls.__dict__:
            table.setdefault(reason, int(cls.__dict__["exit_code"]))
    table.update(_EXTRA_REASONS)
    return table


def _is_unlock_refusal(exc: BaseException) -> bool:
    mod = sys.modules.get("modelseal.guard.unlock")
    if mod is not None and isinstance(exc, mod.UnlockError):
        return True
    core = sys.modules.get("modelseal.guard.core")
    return core is not None and isinstance(exc, getattr(core, "UnlockRateLimitedError", ()))


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for ``exc`` (docs/cli.md)."""
    if isinstance(exc, (KeyboardInterrupt, _Interrupted, *_ABORT)):
        return EXIT_INTERRUPTED
    if isinstance(exc, _USAGE):
        return EXIT_USAGE
    if isinstance(exc, _CLICK):
        return int(getattr(exc, "exit_code", EXIT_USAGE))
    if _is_unlock_refusal(exc):
        return EXIT_UNLOCK
    if isinstance(exc, ModelsealError):
        reason = getattr(exc, "reason", None)
        if type(exc).__name__ == "NotLicensedError" and isinstance(reason, str):
            return reason_exit_codes().get(reason, exc.exit_code)
        return exc.exit_code
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return EXIT_INPUT
    if isinstance(exc, PermissionError | UnicodeDecodeError):
        return EXIT_INPUT
    if _is_validation_error(exc):
        return EXIT_USAGE
    return EXIT_BUG


def _is_validation_error(exc: BaseException) -> bool:
    mod = sys.modules.get("pydantic")
    return mod is not None and isinstance(exc, mod.ValidationError)


def message_for(exc: BaseException) -> str:
    """One line, in the user's terms; never a Python repr or a temporary file name."""
    if isinstance(exc, (KeyboardInterrupt, _Interrupted, *_ABORT)):
        return "interrupted"
    if isinstance(exc, _USAGE):
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return str(exc.format_message()).replace("\n", " ") + where  # type: ignore[attr-defined]
    if isinstance(exc, _CLICK):
        return str(exc.format_message())  # type: ignore[attr-defined]
    if type(exc).__name__ == "NotLicensedError":
        return f"not licensed ({getattr(exc, 'reason', '?')}); details in the audit log"
    if isinstance(exc, ModelsealError):
        text = str(exc) or type(exc).__name__
    elif isinstance(exc, FileNotFoundError):
        text = f"no such file: {exc.filename}"
    elif isinstance(exc, IsADirectoryError):
        text = f"is a directory: {exc.filename}"
    elif isinstance(exc, NotADirectoryError):
        text = f"not a directory: {exc.filename}"
    elif isinstance(exc, PermissionError):
        text = f"permission denied: {exc.filename}"
    elif isinstance(exc, UnicodeDecodeError):
        text = "the input is not UTF-8 text (a binary file?)"
    elif _is_validation_error(exc):
        errors = exc.errors()  # type: ignore[attr-defined]
        first = errors[0] if errors else {}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        text = f"invalid value for {loc or 'a field'}: {first.get('msg', exc)}"
    elif isinstance(exc, OSError):
        name = f": {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror or exc}{name}"
    else:
        text = (
            f"unexpected failure, a bug in modelseal: please report it "
            f"({type(exc).__name__}: {exc}); MODELSEAL_DEBUG=1 shows the traceback"
        )
    return " ".join(text.split())


def error_json(exc: BaseException, code: int) -> dict[str, Any]:
    data: dict[str, Any] = {"exit_code": code, "message": message_for(exc)}
    if isinstance(exc, ModelsealError) and not isinstance(exc, CommandError):
        data["type"] = type(exc).__name__
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        data["reason"] = reason
    extra = exc.details if isinstance(exc, CommandError) else {}
    return {**extra, "ok": False, "error": data}


def report(exc: BaseException) -> int:
    """Print ``exc`` the one way every command does; returns its exit code."""
    code = exit_code_for(exc)
    if code == EXIT_BUG and os.environ.get("MODELSEAL_DEBUG"):
        traceback.print_exception(exc)
    if json_mode:
        emit_json(error_json(exc, code))
    message = message_for(exc)
    if isinstance(exc, _USAGE) and not str(exc.format_message()):  # type: ignore[attr-defined]
        return code  # no arguments at all: the help was printed, that is the message
    console.print(f"[bold red]error:[/] {_escape(message)}")
    return code


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class CommandError(ModelsealError):
    """A failure a command reports itself, with its code and extra ``--json`` fields."""

    def __init__(self, message: str, code: int, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.exit_code = code
        self.details = details
        if isinstance(details.get("reason"), str):
            self.reason = details["reason"]


def fail(message: str, code: int, **details: Any) -> NoReturn:
    """Stop a command with one error line and ``code``; ``details`` join its JSON.

    Reports at once (like any error reaching :func:`report`), so it works
    inside or outside ``errors_as_exit_codes`` and in option callbacks.
    """
    raise typer.Exit(report(CommandError(message, code, details)))


@contextmanager
def errors_as_exit_codes() -> Iterator[None]:
    """Turn any failure inside a command into its error line and exit code.

    :func:`main` does the same for everything outside a command (usage
    errors, Ctrl-C during start-up); this keeps commands correct when run
    through Typer directly (tests with ``CliRunner``).
    """
    try:
        yield
    except _EXIT:
        raise
    except Exception as exc:
        raise typer.Exit(report(exc)) from None
    except KeyboardInterrupt as exc:
        raise typer.Exit(report(exc)) from None


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


# --- inputs and outputs ----------------------------------------------------------


def is_stdio(path: Path | str | None) -> bool:
    return path is not None and str(path) == "-"


def no_stdio(path: Path | None, option: str, why: str) -> None:
    """Refuse ``-`` where a stream makes no sense, with the reason."""
    if is_stdio(path):
        raise InvalidArgumentError(f"{option} - (standard input/output) is not supported: {why}")


def read_bytes_input(path: Path, *, limit: int = 16 * 1024 * 1024) -> bytes:
    """A small input file's bytes, or standard input for ``-``; refuses oversized input."""
    if is_stdio(path):
        data = sys.stdin.buffer.read(limit + 1)
    else:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    if len(data) > limit:
        raise FormatError(f"{path} is larger than {limit} bytes")
    return data


def read_text_input(path: Path, *, what: str, error: type[ModelsealError] = FormatError) -> str:
    """A text input (a license, a record), or standard input for ``-``.

    A binary file is reported as ``error`` (e.g. a malformed license), not a
    ``UnicodeDecodeError`` traceback.
    """
    data = read_bytes_input(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        name = "standard input" if is_stdio(path) else str(path)
        raise error(f"{name} is not a {what} (not UTF-8 text: a binary file?)") from None


def write_output(
    path: Path,
    data: bytes,
    *,
    force: bool,
    mode: int = 0o644,
    inputs: Iterable[Path | str | None] = (),
) -> str:
    """Write an output file (``-``: standard output); returns how to name it to the user."""
    if is_stdio(path):
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return "standard output"
    from modelseal._fs import write_file

    write_file(path, data, mode=mode, overwrite=force, inputs=inputs)
    return str(path)


def trust_paths(trust: list[Path] | None) -> list[Path]:
    """``--trust``, else ``MODELSEAL_TRUST`` (``:``-separated), as ``Guard.from_env`` reads it."""
    if trust:
        return trust
    env = os.environ.get("MODELSEAL_TRUST", "")
    paths = [Path(p) for p in env.split(os.pathsep) if p]
    if not paths:
        raise InvalidArgumentError("give --trust (the vendor's public key) or set MODELSEAL_TRUST")
    return paths


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


# --- the entry point ---------------------------------------------------------------


def main(app_factory: Callable[[], Any], argv: list[str] | None = None) -> NoReturn:
    """Run the CLI: every outcome is an exit code, every failure one ``error:`` line.

    ``app_factory`` imports the Typer app, so Ctrl-C or a broken install
    while the command modules load is reported like any other failure.
    """
    global json_mode
    args = sys.argv[1:] if argv is None else argv
    json_mode = "--json" in args
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        app = app_factory()
        rv = app(args=args, prog_name="modelseal", standalone_mode=False)
        code = rv if isinstance(rv, int) else EXIT_OK
    except _EXIT as exc:
        code = int(getattr(exc, "exit_code", EXIT_OK))
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        code = report(exc)
    finally:
        if previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous)
    sys.stdout.flush()
    sys.exit(code)
