"""Rules of the audit log's key and its verification report
(docs/guard-audit-unlock.md):

* ``mac_key = HKDF-SHA256(ikm=device_secret, salt="modelseal/audit/v1",
  info="mac" || 0x00 || context, L=32)``, checked against an independent
  HKDF (the ``cryptography`` primitive, called directly);
* the report's JSON (``modelseal audit verify --json``) has exactly its
  documented members;
* every error raised for a problem carries the 1-based line and its kind.

Found by mutation testing (tests/MUTATION.md): the HKDF salt and info, the
JSON member names and the errors' ``line``/``kind`` could all change
without a failing test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelseal.guard.audit import (
    AuditFormatError,
    AuditTamperedError,
    AuditTruncatedError,
    derive_audit_mac_key,
    iter_records,
    verify,
)
from tests.guard.test_audit import lines_of, make_log


def _independent(secret: bytes, context: bytes) -> bytes:
    hkdf = HKDF(hashes.SHA256(), length=32, salt=b"modelseal/audit/v1", info=b"mac\x00" + context)
    return hkdf.derive(secret)


@pytest.mark.parametrize("context", [b"", b"lic-1", b"\x00", "licence-é".encode()])
def test_the_mac_key_is_the_specified_hkdf(context: bytes) -> None:
    secret = bytes(range(32))
    assert derive_audit_mac_key(secret, context=context) == _independent(secret, context)


def test_the_json_report_has_its_documented_members(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    written = make_log(path, 3)
    ok = verify(path).to_json()
    assert ok == {
        "ok": True,
        "path": str(path),
        "keyed": False,
        "records": 3,
        "head": [2, written[2]["hash"]],
        "torn_tail_bytes": 0,
        "problem": None,
    }
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert verify(empty).to_json()["head"] is None
    lines = lines_of(path)
    path.write_bytes(lines[0] + lines[1].replace(b'"event_1"', b'"EVENT_1"') + lines[2])
    bad = verify(path).to_json()
    assert (bad["ok"], bad["records"], bad["head"]) == (False, 1, [0, written[0]["hash"]])
    assert set(bad["problem"]) == {"line", "kind", "message"}
    assert (bad["problem"]["line"], bad["problem"]["kind"]) == (2, "hash")
    assert "line 2" in bad["problem"]["message"]


def test_errors_carry_line_and_kind(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    written = make_log(path, 3)
    lines = lines_of(path)

    path.write_bytes(lines[0] + b"not json\n" + lines[2])
    with pytest.raises(AuditFormatError) as malformed:
        verify(path).raise_for_problem()
    assert malformed.value.line == 2 and str(path) in str(malformed.value)

    path.write_bytes(lines[0] + lines[1])
    with pytest.raises(AuditTruncatedError) as cut:
        verify(path, expected_head=(2, written[2]["hash"])).raise_for_problem()
    assert (cut.value.line, cut.value.kind) == (3, "truncated")

    path.write_bytes(lines[0] + lines[2])
    with pytest.raises(AuditTamperedError) as gap:
        verify(path).raise_for_problem()
    assert (gap.value.line, gap.value.kind) == (2, "seq")
    assert not isinstance(gap.value, AuditTruncatedError)


def test_iter_records_names_the_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    make_log(path, 3)
    lines = lines_of(path)
    path.write_bytes(lines[0] + lines[1] + b"{}\n")
    records = iter_records(path)
    assert [next(records)["seq"], next(records)["seq"]] == [0, 1]
    with pytest.raises(AuditFormatError, match="line 3") as info:
        next(records)
    assert info.value.line == 3
