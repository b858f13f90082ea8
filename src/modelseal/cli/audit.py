"""``modelseal audit``: check a guard's tamper-evident audit log."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Annotated

import typer

from modelseal.cli._common import (
    JsonOpt,
    console,
    emit_json,
    errors_as_exit_codes,
    fail,
    no_stdio,
    out,
)
from modelseal.errors import InvalidArgumentError, KeyFileError
from modelseal.guard.audit import MIN_MAC_KEY_SIZE
from modelseal.guard.audit import verify as verify_log

app = typer.Typer(help="Check the guard's tamper-evident audit logs.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Check the guard's tamper-evident audit logs."""
    # A callback keeps ``verify`` a subcommand even while it is the only one.


def read_mac_key(path: Path) -> bytes:
    """The audit MAC key from a text file: hex, or base64url with or without padding."""
    text = path.read_text(encoding="ascii", errors="replace").strip()
    key: bytes | None = None
    if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", text):
        key = bytes.fromhex(text)
    elif re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", text):
        try:
            key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            key = None
    if key is None or len(key) < MIN_MAC_KEY_SIZE:
        raise KeyFileError(
            f"{path}: expected an audit key of at least {MIN_MAC_KEY_SIZE} bytes "
            "as hex or base64url text"
        )
    return key


def _parse_head(text: str) -> tuple[int, str]:
    seq, sep, digest = text.partition(":")
    if not sep or not seq.isdigit() or not digest:
        raise InvalidArgumentError("--expect-head: expected SEQ:HASH, e.g. 41:Vx3...")
    return int(seq), digest


def verify(
    path: Annotated[Path, typer.Argument(help="the audit log (JSON lines)")],
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--mac-key", "--key-file", help="the log's MAC key (hex or base64url), if it is keyed"
        ),
    ] = None,
    expect_head: Annotated[
        str | None,
        typer.Option(help="SEQ:HASH the guard's state remembers; catches a cut-off end"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every record's hash chain; name the first line that breaks.

    Exit codes: 0 intact (a torn last line from a crash is a warning), 4 tampered
    (edited, deleted, inserted, reordered or cut-off records), 3 malformed,
    5 unreadable key file.

    Example: modelseal audit verify ~/.local/state/modelseal/LICENSE_ID.audit.jsonl
    """
    with errors_as_exit_codes():
        head = _parse_head(expect_head) if expect_head is not None else None
        mac_key = read_mac_key(key_file) if key_file is not None else None
        no_stdio(path, "LOG", "the log is read from its file")
        report = verify_log(path, mac_key=mac_key, expected_head=head)
        if as_json:
            err = report.error()
            if err is not None:
                # the same shape as every other failure, plus the report
                fail(str(err), err.exit_code, **report.to_json())
            emit_json(report.to_json())
            return
        report.raise_for_problem()
        if report.torn_tail:
            console.print(
                f"[yellow]warning:[/] the last line is incomplete ({report.torn_tail_bytes} "
                "bytes): a crash during an append; the next append removes it",
                highlight=False,
                soft_wrap=True,
            )
        last = "empty log" if report.head is None else f"head {report.head.seq}:{report.head.hash}"
        keyed = "keyed (HMAC-SHA256)" if report.keyed else "unkeyed (SHA-256)"
        out.print(
            f"[green]ok[/] {path}: {report.records} record(s), chain intact, {keyed}, {last}",
            highlight=False,
            soft_wrap=True,
        )


app.command("verify")(verify)

__all__ = ["app", "read_mac_key", "verify"]
