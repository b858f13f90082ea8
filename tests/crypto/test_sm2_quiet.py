"""Issue #8 item 15: a bad SM2 signature is a typed error, and nothing on stderr.

GmSSL prints a C source trace to stderr for every signature that does not
verify, which turned the CLI's one ``error:`` line into three.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from modelseal.crypto import generate_private_key, sm2
from modelseal.errors import InvalidSignatureError
from modelseal.license import issue_license


@pytest.mark.parametrize("signature", ["wrong", b"\x30\x03\x02\x01\x00", b"xxxx", b""])
def test_bad_signatures_leave_stderr_alone(
    capfd: pytest.CaptureFixture[str], signature: str | bytes
) -> None:
    private, public = sm2.generate()
    if signature == "wrong":
        signature = sm2.sign(private, public, b"another message")
    assert isinstance(signature, bytes)
    with pytest.raises(InvalidSignatureError):
        sm2.verify(public, b"message", signature)
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    # stderr still works afterwards
    print("after", file=sys.stderr)
    assert capfd.readouterr().err == "after\n"


def test_only_gmssl_trace_lines_are_dropped() -> None:
    captured = (
        b"/project/GmSSL/src/sm2_sign.c:265:sm2_fast_verify():\n"
        b"another thread: still here\n"
        b"/project/GmSSL/src/sm2_sign.c:671:sm2_verify_finish():\n"
        b"a line ending in x.c:1:f():\n"
    )
    assert sm2._without_gmssl_trace(captured) == (
        b"another thread: still here\na line ending in x.c:1:f():\n"
    )


def test_cli_prints_one_error_line_for_a_bad_sm2_license(tmp_path: Path) -> None:
    key = generate_private_key("sm2")
    key.public_key().save(tmp_path / "vendor.pub")
    token = issue_license(
        signing_key=key,
        issuer="acme",
        customer="c",
        audience=["acme/ocr"],
        valid_for=timedelta(days=1),
    ).token
    other = issue_license(
        signing_key=generate_private_key("sm2"),
        issuer="acme",
        customer="c",
        audience=["acme/ocr"],
        valid_for=timedelta(days=1),
    ).token
    head, body, _ = token.split(".")
    # a well-formed signature by another key: GmSSL gets to run its verify and fail
    (tmp_path / "bad.jwt").write_text(f"{head}.{body}.{other.split('.')[2]}")
    r = subprocess.run(
        [
            *(sys.executable, "-m", "modelseal.cli", "license", "verify"),
            *(str(tmp_path / "bad.jwt"), "--trust", str(tmp_path / "vendor.pub")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 12
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr


def test_other_output_written_while_gmssl_runs_is_kept(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only GmSSL's trace is dropped; anything else written to fd 2 meanwhile reaches stderr."""
    import os

    def noisy_verify(*args: object, **kwargs: object) -> bool:
        os.write(2, b"/project/GmSSL/src/sm2_sign.c:265:sm2_fast_verify():\n")
        os.write(2, b"a worker thread logs this\n")
        return False

    monkeypatch.setattr(sm2.gmssl_pyx, "sm2_verify", noisy_verify)
    with pytest.raises(InvalidSignatureError):
        sm2.verify(b"\x00" * 64, b"m", b"s")
    assert capfd.readouterr().err == "a worker thread logs this\n"
