"""Rule: the header parser accepts exactly the v1 header (docs/format-mseal.md)
and refuses every field of the wrong type or out of range with a
``FormatError`` (``UnsupportedVersionError`` for a version or AEAD it does
not know). JSON ``true`` is not a number here, although ``bool`` is an
``int`` in Python. And the writer emits the header as the spec says: sorted
keys, no whitespace.

Found by mutation testing (tests/MUTATION.md): no test sent a boolean size,
a bad chunk size or a wrong-typed entry through the parser.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.crypto import ContentKey
from modelseal.errors import FormatError, UnsupportedVersionError
from modelseal.sealed import seal_path
from modelseal.sealed.format import (
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    PREAMBLE_SIZE,
    Header,
    encode_preamble,
    parse_header,
    parse_preamble,
)

KEY = ContentKey(bytes(range(32)))
FIELDS = {"version", "aead", "chunk_size", "salt", "key_id", "model_id", "framework", "kind"}
FIELDS |= {"payload_size", "entries", "created_at"}


@pytest.fixture(scope="module")
def raw_header(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    src = tmp_path_factory.mktemp("hdr") / "model"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a" * 3000)
    (src / "b.bin").write_bytes(b"b" * 10)
    out = src.parent / "m.mseal"
    seal_path(src, out, KEY, chunk_size=1024, model_id="acme/m")
    blob = out.read_bytes()
    return blob[PREAMBLE_SIZE : PREAMBLE_SIZE + parse_preamble(blob[:PREAMBLE_SIZE])]


def _with(raw: bytes, **changes: Any) -> bytes:
    obj = json.loads(raw)
    obj.update(changes)
    return json.dumps(obj).encode()


def test_the_writer_emits_sorted_keys_without_whitespace(raw_header: bytes) -> None:
    obj = json.loads(raw_header)
    assert raw_header == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    header = parse_header(raw_header)
    assert header.encode() == raw_header
    non_ascii = Header(**{**header.__dict__, "model_id": "modèle/ü"})
    assert parse_header(non_ascii.encode()) == non_ascii


BAD_FIELDS: list[tuple[str, Any]] = [
    ("version", True),
    ("version", "1"),
    ("aead", 1),
    ("chunk_size", True),
    ("chunk_size", 1024.0),
    ("chunk_size", "1024"),
    ("chunk_size", MIN_CHUNK_SIZE // 2),
    ("chunk_size", MIN_CHUNK_SIZE + 1),
    ("chunk_size", 3 * MIN_CHUNK_SIZE),
    ("chunk_size", 2 * MAX_CHUNK_SIZE),
    ("chunk_size", 0),
    ("chunk_size", -1024),
    ("salt", "not base64!"),
    ("salt", "AAAA"),
    ("salt", None),
    ("key_id", ""),
    ("key_id", "k" * 129),
    ("key_id", 7),
    ("model_id", 7),
    ("model_id", ["acme/m"]),
    ("framework", "tensorflow"),
    ("framework", None),
    ("kind", "archive"),
    ("kind", True),
    ("payload_size", True),
    ("payload_size", -1),
    ("payload_size", 3011),
    ("payload_size", "3010"),
    ("created_at", 0),
    ("entries", {}),
    ("entries", None),
]


@pytest.mark.parametrize(("name", "value"), BAD_FIELDS, ids=[f"{n}={v!r}" for n, v in BAD_FIELDS])
def test_a_bad_field_is_refused(raw_header: bytes, name: str, value: Any) -> None:
    parse_header(raw_header)  # the unchanged header parses
    with pytest.raises(FormatError):
        parse_header(_with(raw_header, **{name: value}))


@pytest.mark.parametrize(("name", "value"), [("version", 2), ("version", 0), ("aead", "rot13")])
def test_an_unknown_version_or_aead_is_unsupported(
    raw_header: bytes, name: str, value: Any
) -> None:
    with pytest.raises(UnsupportedVersionError):
        parse_header(_with(raw_header, **{name: value}))


def test_limits_that_are_allowed(raw_header: bytes) -> None:
    for size in (MIN_CHUNK_SIZE, MAX_CHUNK_SIZE):
        assert parse_header(_with(raw_header, chunk_size=size)).chunk_size == size
    assert parse_header(_with(raw_header, key_id="k" * 128)).key_id == "k" * 128
    assert parse_header(_with(raw_header, key_id="k")).key_id == "k"
    assert parse_header(_with(raw_header, model_id=None)).model_id is None


BAD_ENTRIES: list[Any] = [
    [{"path": "a.bin", "offset": 0, "size": 3000}],  # sizes no longer add up
    [{"path": "a.bin", "offset": 0, "size": 3000}, {"path": "b.bin", "offset": 3001, "size": 9}],
    [{"path": "a.bin", "offset": 0, "size": 3000}, {"path": "a.bin", "offset": 3000, "size": 10}],
    [{"path": "a.bin", "offset": 0, "size": 3010, "x": 1}],
    [{"path": "a.bin", "offset": 0}],
    [{"path": "a.bin", "offset": False, "size": 3010}],
    [{"path": "a.bin", "offset": 0, "size": True}, {"path": "b", "offset": 1, "size": 3009}],
    [{"path": "a.bin", "offset": 0, "size": 3020}, {"path": "b.bin", "offset": 3020, "size": -10}],
    [{"path": "../a.bin", "offset": 0, "size": 3010}],
    [{"path": 7, "offset": 0, "size": 3010}],
    ["a.bin"],
]


@pytest.mark.parametrize("entries", BAD_ENTRIES)
def test_bad_entries_are_refused(raw_header: bytes, entries: Any) -> None:
    with pytest.raises(FormatError):
        parse_header(_with(raw_header, entries=entries))


def test_a_file_has_exactly_one_entry(raw_header: bytes) -> None:
    with pytest.raises(FormatError, match="exactly one entry"):
        parse_header(_with(raw_header, kind="file"))


@pytest.mark.parametrize("header_len", [0, 1, (1 << 20) + 1, 0xFFFFFFFF])
def test_a_header_length_out_of_range_is_refused(header_len: int) -> None:
    with pytest.raises(FormatError, match="out of range"):
        parse_preamble(encode_preamble(header_len))


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(sorted(FIELDS)),
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers()),
    ),
)
def test_property_any_field_value_parses_or_fails_typed(name: str, value: Any) -> None:
    base = (
        b'{"aead":"aes-256-gcm","chunk_size":1024,"created_at":"2026-01-01T00:00:00Z",'
        b'"entries":[{"offset":0,"path":"m.bin","size":5}],"framework":"bytes","key_id":"k",'
        b'"kind":"file","model_id":null,"payload_size":5,'
        b'"salt":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","version":1}'
    )
    parse_header(base)
    try:
        header = parse_header(_with(base, **{name: value}))
    except FormatError:
        return
    # accepted: never a boolean or a non-string id, and it round-trips
    assert not isinstance(value, bool), f"boolean {name} accepted"
    assert name != "model_id" or value is None or isinstance(value, str)
    assert parse_header(header.encode()) == header


@pytest.mark.parametrize("drop", sorted(FIELDS))
def test_a_missing_field_is_named(raw_header: bytes, drop: str) -> None:
    obj = json.loads(raw_header)
    del obj[drop]
    with pytest.raises(FormatError, match=rf"missing \['{drop}'\], unknown \[\]"):
        parse_header(json.dumps(obj).encode())


def test_an_unknown_field_is_named(raw_header: bytes) -> None:
    with pytest.raises(FormatError, match=r"missing \[\], unknown \['compression'\]"):
        parse_header(_with(raw_header, compression="zstd"))


@pytest.mark.parametrize("raw", [b"[]", b'"header"', b"1", b"null", b"{", b"\xff{}"])
def test_a_header_that_is_not_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(FormatError):
        parse_header(raw)
