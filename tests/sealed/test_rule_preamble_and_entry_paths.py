"""Rules of the ``.mseal`` preamble and entry paths (docs/format-mseal.md):

* an entry path is refused if it is empty, absolute, contains a backslash
  or a NUL, or has an empty, ``.`` or ``..`` part: each of these alone
  (a path that could escape the directory an operator extracts into);
* the header length is 2 to 1 MiB, both ends included; the preamble is its
  first 16 bytes, whatever follows;
* a short input that starts like the magic is a truncated ``.mseal``
  (``TruncatedError``); anything else short is not a ``.mseal`` file;
* every refusal says what is wrong (the CLI prints it as the one-line error).

Found by mutation testing (tests/MUTATION.md, sealed/format.py): each
path rule combined with another by ``and``, the length edges, the truncated
vs not-a-file distinction and the messages could change without a failing
test.
"""

from __future__ import annotations

import pytest

from modelseal.crypto import ContentKey
from modelseal.errors import FormatError, TruncatedError, UnsupportedVersionError
from modelseal.sealed.format import (
    MAGIC,
    MAX_CHUNKS,
    MAX_HEADER_SIZE,
    Header,
    check_key,
    encode_preamble,
    parse_header,
    parse_preamble,
    validate_entry_path,
)
from tests.sealed.test_rule_header_fields_are_validated import _with, raw_header  # noqa: F401


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "/a", "a\\b", "a\x00b", "a//b", "a/", "./a", "a/./b", "..", "a/../b", "."],
)
def test_each_unsafe_entry_path_is_refused_on_its_own(path: str) -> None:
    with pytest.raises(FormatError) as info:
        validate_entry_path(path)
    assert str(info.value) == f"invalid entry path {path!r}"


@pytest.mark.parametrize("path", ["a", "a/b.bin", "dir/.hidden", "a..b/c", "x/y/z", "é/ü"])
def test_safe_entry_paths_are_kept(path: str) -> None:
    assert validate_entry_path(path) == path


@pytest.mark.parametrize("header_len", [2, 3, MAX_HEADER_SIZE - 1, MAX_HEADER_SIZE])
def test_header_lengths_at_the_edges_are_allowed(header_len: int) -> None:
    assert parse_preamble(encode_preamble(header_len)) == header_len


def test_the_preamble_is_the_first_16_bytes_whatever_follows() -> None:
    assert parse_preamble(encode_preamble(300) + b'{"version":1}' + bytes(64)) == 300


def test_a_short_input_is_truncated_only_if_it_starts_like_the_magic() -> None:
    for cut in (MAGIC[:1], MAGIC, MAGIC + b"\x01\x00"):
        with pytest.raises(TruncatedError) as info:
            parse_preamble(cut)
        assert str(info.value) == "file ends inside the preamble"
    for short in (b"", b"PK\x03\x04", b"\x89PNG\r\n"):
        with pytest.raises(FormatError) as info:
            parse_preamble(short)
        assert type(info.value) is FormatError
        assert str(info.value) == "not a .mseal file (too short)"


def test_every_preamble_refusal_says_what_is_wrong() -> None:
    good = encode_preamble(100)
    cases = [
        (b"GIF89a" + good[6:], FormatError, "not a .mseal file (bad magic)"),
        (
            good[:8] + b"\x02" + good[9:],
            UnsupportedVersionError,
            ".mseal format version 2 is not supported (this release reads 1)",
        ),
        (
            good[:9] + b"\x00\x01\x00" + good[12:],
            FormatError,
            "reserved preamble bytes are not zero",
        ),
        (encode_preamble(1), FormatError, "header length 1 out of range"),
    ]
    for raw, kind, message in cases:
        with pytest.raises(kind) as info:
            parse_preamble(raw)
        assert str(info.value) == message


def test_every_header_refusal_says_what_is_wrong(raw_header: bytes) -> None:  # noqa: F811
    cases = [
        (b"{", "header is not strict UTF-8 JSON"),
        (b"[]", "header is not a JSON object"),
        (_with(raw_header, version=7), "header version 7 is not supported"),
        (_with(raw_header, aead="rot13"), "unknown AEAD 'rot13'"),
        (
            _with(raw_header, chunk_size=3000),
            "chunk size 3000 is not a power of two in [1 KiB, 64 MiB]",
        ),
        (_with(raw_header, chunk_size="big"), "header field 'chunk_size' has the wrong type"),
        (_with(raw_header, chunk_size=True), "header field 'chunk_size' has the wrong type"),
        (_with(raw_header, salt="AAAAA"), "salt is not base64url"),
    ]
    one = [{"path": "a.bin", "offset": 0, "size": 3010}]
    cases += [
        (_with(raw_header, salt="AAAA"), "salt must be 32 bytes"),
        (_with(raw_header, key_id=""), "key id has an invalid length"),
        (_with(raw_header, key_id="k" * 129), "key id has an invalid length"),
        (_with(raw_header, model_id=5), "model_id must be a string or null"),
        (_with(raw_header, framework="keras"), "unknown framework hint 'keras'"),
        (_with(raw_header, kind="archive"), "unknown kind 'archive'"),
        (_with(raw_header, payload_size=-1, entries=[]), "payload size is negative"),
        (_with(raw_header, entries=[["a.bin", 0, 3010]]), "each entry needs exactly path, offset"),
        (
            _with(raw_header, entries=[*one, {"path": "a.bin", "offset": 3010, "size": 0}]),
            "duplicate entry 'a.bin'",
        ),
        (
            _with(raw_header, entries=[{"path": "a.bin", "offset": 1, "size": 3009}]),
            "entries must be contiguous and in payload order",
        ),
        (
            _with(raw_header, entries=[{"path": "a.bin", "offset": 0, "size": 3009}]),
            "entry sizes do not add up to the payload size",
        ),
        (_with(raw_header, kind="file", entries=[]), "entry sizes do not add up"),
        (
            _with(raw_header, kind="file", payload_size=0, entries=[]),
            "a sealed file has exactly one entry",
        ),
    ]
    for raw, message in cases:
        with pytest.raises(FormatError) as info:
            parse_header(raw)
        assert str(info.value).startswith(message), (raw[:40], str(info.value))
    header = parse_header(raw_header)
    with pytest.raises(FormatError) as info:
        header.entry("missing.bin")
    assert str(info.value) == "no entry 'missing.bin' in this sealed model"


def test_a_wrong_key_names_both_key_ids(raw_header: bytes) -> None:  # noqa: F811
    header: Header = parse_header(raw_header)
    other = ContentKey(bytes(32))
    with pytest.raises(Exception) as info:  # noqa: PT011 - WrongKeyError, checked below
        check_key(header, other)
    assert type(info.value).__name__ == "WrongKeyError"
    assert str(info.value) == (
        f"this file was sealed with key {header.key_id}, not with key {other.key_id}"
    )


def test_a_payload_of_exactly_2_to_the_32_chunks_is_the_largest(raw_header: bytes) -> None:  # noqa: F811
    """The chunk counter is 32 bits (docs/format-mseal.md): 2^32 chunks fit, one byte
    more does not."""
    largest = MAX_CHUNKS * 1024
    entries = [{"path": "a.bin", "offset": 0, "size": largest}]
    header = parse_header(_with(raw_header, payload_size=largest, entries=entries))
    assert header.chunk_count == MAX_CHUNKS
    entries = [{"path": "a.bin", "offset": 0, "size": largest + 1}]
    with pytest.raises(FormatError) as info:
        parse_header(_with(raw_header, payload_size=largest + 1, entries=entries))
    assert str(info.value) == "payload needs more chunks than the 32-bit counter allows"
