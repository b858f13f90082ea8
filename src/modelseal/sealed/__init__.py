"""The ``.mseal`` sealed-model container (spec: docs/format-mseal.md)."""

from modelseal.sealed.format import (
    DEFAULT_CHUNK_SIZE,
    FRAMEWORK_HINTS,
    MAGIC,
    VERSION,
    Entry,
    Header,
)
from modelseal.sealed.reader import SealedReader, read_header
from modelseal.sealed.writer import detect_framework, seal_path

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FRAMEWORK_HINTS",
    "MAGIC",
    "VERSION",
    "Entry",
    "Header",
    "SealedReader",
    "detect_framework",
    "read_header",
    "seal_path",
]
