"""Document sniffing: any bytes give an accepted type or the one typed error, and markup
never passes as text, whatever it is called."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.controlplane.platform.sniff import ACCEPTED, UnsupportedDocumentError, sniff

NAMES = st.sampled_from(["", "a.pdf", "notes.md", "x.html", "../../etc/passwd", "r.txt"])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048), name=NAMES)
def test_any_bytes_are_typed_or_refused(data: bytes, name: str) -> None:
    with contextlib.suppress(UnsupportedDocumentError):  # the one error allowed
        assert sniff(data, name) in ACCEPTED


@settings(max_examples=200, deadline=None)
@given(
    tag=st.sampled_from(
        ["<!DOCTYPE html>", "<html>", "<SCRIPT>", "<svg ", "<?xml version='1.0'?>"]
    ),
    pad=st.text(alphabet=" \t\r\n\ufeff", max_size=5),
    rest=st.text(max_size=200),
    name=NAMES,
)
def test_markup_is_refused_under_any_name(tag: str, pad: str, rest: str, name: str) -> None:
    with pytest.raises(UnsupportedDocumentError):  # as markup, or as binary (a NUL in rest)
        sniff((pad + tag + rest).encode(), name)


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (b"%PDF-1.7", "x.txt", "application/pdf"),
        (b"\x89PNG\r\n\x1a\n....", "x.pdf", "image/png"),
        (b"\xff\xd8\xff\xe0", "", "image/jpeg"),
        (b"[1, 2]", "data.md", "application/json"),
        (b"# Title", "README.MD", "text/markdown"),
        (b"{not json", "", "text/plain"),
    ],
)
def test_examples(data: bytes, name: str, expected: str) -> None:
    assert sniff(data, name) == expected
