"""``modelseal audit verify`` through Typer's test runner: output and exit codes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelseal.cli.audit import app
from modelseal.errors import FormatError, IntegrityError, KeyFileError
from modelseal.guard.audit import AuditLog

KEY = bytes(range(100, 132))
runner = CliRunner()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.log"
    audit = AuditLog(path)
    for i in range(4):
        audit.append("call", data={"i": i})
    return path


@pytest.fixture
def keyed_log(tmp_path: Path) -> Path:
    path = tmp_path / "keyed.log"
    audit = AuditLog(path, mac_key=KEY)
    for i in range(3):
        audit.append("call", data={"i": i})
    return path


def test_ok(log: Path) -> None:
    r = runner.invoke(app, ["verify", str(log)])
    assert r.exit_code == 0, r.output
    assert "ok" in r.stdout and "4 record(s)" in r.stdout and "unkeyed" in r.stdout


def test_ok_json(log: Path) -> None:
    r = runner.invoke(app, ["verify", str(log), "--json"])
    assert r.exit_code == 0
    report = json.loads(r.stdout)
    assert report["ok"] is True and report["records"] == 4 and report["head"][0] == 3


def test_tampered_exits_4(log: Path) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"i":1', b'"i":9')
    log.write_bytes(b"".join(lines))
    r = runner.invoke(app, ["verify", str(log)])
    assert r.exit_code == IntegrityError.exit_code == 4
    assert "line 2" in r.stderr and "edited" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(app, ["verify", str(log), "--json"])
    assert r.exit_code == 4
    report = json.loads(r.stdout)
    assert report["ok"] is False and report["problem"]["line"] == 2
    assert report["problem"]["kind"] == "hash"


def test_malformed_exits_3(log: Path) -> None:
    with log.open("ab") as f:
        f.write(b"garbage\n")
    r = runner.invoke(app, ["verify", str(log)])
    assert r.exit_code == FormatError.exit_code == 3
    assert "line 5" in r.stderr


def test_missing_file_exits_3(tmp_path: Path) -> None:
    r = runner.invoke(app, ["verify", str(tmp_path / "nope.log")])
    assert r.exit_code == 3 and "no such file" in r.stderr


def test_torn_tail_is_a_warning(log: Path) -> None:
    with log.open("ab") as f:
        f.write(b'{"seq":4,"ts"')
    r = runner.invoke(app, ["verify", str(log)])
    assert r.exit_code == 0
    assert "incomplete" in r.stderr and "4 record(s)" in r.stdout


@pytest.mark.parametrize("encode", [bytes.hex, lambda k: base64.urlsafe_b64encode(k).decode()])
def test_keyed(keyed_log: Path, tmp_path: Path, encode: object) -> None:
    key_file = tmp_path / "audit.key"
    key_file.write_text(encode(KEY) + "\n")  # type: ignore[operator]
    r = runner.invoke(app, ["verify", str(keyed_log), "--key-file", str(key_file)])
    assert r.exit_code == 0, r.output
    assert "keyed (HMAC-SHA256)" in r.stdout
    r = runner.invoke(app, ["verify", str(keyed_log)])  # without the key
    assert r.exit_code == 4 and "with its key" in r.stderr


@pytest.mark.parametrize("content", ["", "not a key!", "abcd", "zz" * 8])
def test_bad_key_file_exits_5(keyed_log: Path, tmp_path: Path, content: str) -> None:
    key_file = tmp_path / "audit.key"
    key_file.write_text(content)
    r = runner.invoke(app, ["verify", str(keyed_log), "--key-file", str(key_file)])
    assert r.exit_code == KeyFileError.exit_code == 5


def test_expect_head(log: Path) -> None:
    head = AuditLog(log).head()
    assert head is not None
    anchor = f"{head.seq}:{head.hash}"
    assert runner.invoke(app, ["verify", str(log), "--expect-head", anchor]).exit_code == 0
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:2]))
    r = runner.invoke(app, ["verify", str(log), "--expect-head", anchor])
    assert r.exit_code == 4 and "removed from its end" in r.stderr
    r = runner.invoke(app, ["verify", str(log), "--expect-head", "nonsense"])
    assert r.exit_code == 2


def test_help_has_an_example() -> None:
    r = runner.invoke(app, ["verify", "--help"])
    assert r.exit_code == 0 and "Example: modelseal audit verify" in r.stdout
