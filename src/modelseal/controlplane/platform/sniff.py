"""What a document is, judged by its bytes, never by the uploader's Content-Type or name.

Documents are downloaded by other people (operators reading a vendor's
usage guide), so what we accept and how we label it matters: a file that
claims to be a PDF but holds HTML would run script in a browser that
trusts the label. We recognise a short list of formats by their magic
bytes and refuse the rest (HTML, SVG, executables, anything unknown).
Downloads are also sent as attachments with ``nosniff``.
"""

from __future__ import annotations

import io
import zipfile
from typing import Final

#: What the platform stores, by the content type it serves them with.
ACCEPTED: Final = (
    "application/pdf",
    "image/png",
    "image/jpeg",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/zip",
    "text/markdown",
    "application/json",
    "text/plain",
)

_OOXML: Final = {
    "word/": ACCEPTED[3],
    "xl/": ACCEPTED[4],
    "ppt/": ACCEPTED[5],
}
# Text that a browser would render as a document (script, styles) if the
# label were ever lost: refused even as "plain text".
_MARKUP: Final = (b"<!doctype", b"<html", b"<script", b"<svg", b"<?xml", b"<body", b"<iframe")


class UnsupportedDocumentError(ValueError):
    """The bytes are not one of the accepted formats; the message says what is accepted."""


def _zip_type(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise UnsupportedDocumentError("starts like a ZIP archive but is not a valid one") from None
    if "[Content_Types].xml" in names:
        for prefix, ctype in _OOXML.items():
            if any(n.startswith(prefix) for n in names):
                return ctype
    return "application/zip"


def _text_type(data: bytes, filename: str) -> str:
    if b"\x00" in data:
        raise UnsupportedDocumentError("binary data of an unknown format")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsupportedDocumentError("neither a known binary format nor UTF-8 text") from None
    head = text.lstrip("\ufeff \t\r\n")[:1024].lower().encode()
    if any(head.startswith(tag) for tag in _MARKUP):
        raise UnsupportedDocumentError("HTML, SVG and XML documents are not accepted")
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        import json

        try:
            json.loads(stripped)
        except ValueError:
            pass
        else:
            return "application/json"
    if filename.lower().endswith((".md", ".markdown")):
        return "text/markdown"
    return "text/plain"


def sniff(data: bytes, filename: str = "") -> str:
    """The content type of ``data``, from its bytes (the name only tells Markdown from text).

    Raises :class:`UnsupportedDocumentError` for anything not in :data:`ACCEPTED`.
    """
    if not data:
        raise UnsupportedDocumentError("the document is empty")
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"PK\x03\x04"):
        return _zip_type(data)
    return _text_type(data, filename)


__all__ = ["ACCEPTED", "UnsupportedDocumentError", "sniff"]
