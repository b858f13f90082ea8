"""docs/reference/ is generated from the code and must match it (scripts/gen_reference.py).

A command, option or API operation added without regenerating fails here,
with the command that fixes it in the message.
"""

from __future__ import annotations

import difflib
import runpy
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_reference.py"


@pytest.fixture(scope="module")
def generator() -> dict[str, Any]:
    return runpy.run_path(str(SCRIPT))


@pytest.fixture(scope="module")
def files(generator: dict[str, Any]) -> dict[Path, str]:
    generated: dict[Path, str] = generator["generate"]()
    return generated


def test_the_references_in_docs_are_current(generator: dict[str, Any], files: dict[Path, str]):
    for path, text in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            diff = "".join(
                list(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        text.splitlines(keepends=True),
                        str(path.relative_to(ROOT)),
                        "generated now",
                        n=1,
                    )
                )[:40]
            )
            pytest.fail(
                f"{path.relative_to(ROOT)} is stale; regenerate with: "
                f"{generator['REGENERATE']}\n{diff}"
            )


def test_the_cli_reference_walks_every_command(files: dict[Path, str]) -> None:
    """Not a copy of the tree: every command typer knows has its section and options."""
    import typer

    from modelseal.cli import app

    text = files[ROOT / "docs" / "reference" / "cli.md"]

    def walk(command: Any, path: list[str]) -> None:
        title = " ".join(path)
        assert f"## `{title}`" in text, title
        section = text.split(f"## `{title}`", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                assert f"`{param.opts[0]}`" in section, (title, param.opts)
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), ["modelseal"])


def test_the_api_reference_lists_every_operation(files: dict[Path, str]) -> None:
    import json

    text = files[ROOT / "docs" / "reference" / "api.md"]
    document = json.loads(files[ROOT / "docs" / "reference" / "openapi.json"])
    operations = [
        f"`{method.upper()} {path}`"
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(operations) > 50
    for operation in operations:
        assert operation in text, operation
    assert "`POST /v1/session/totp`" in text and "`POST /v1/platform/deployments`" in text
