"""Shared fixtures. Models are tiny and built here; nothing is downloaded."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelseal.crypto import ContentKey

VECTORS = Path(__file__).parent / "vectors"


def load_vectors(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


@pytest.fixture
def content_key() -> ContentKey:
    return ContentKey.generate()


@pytest.fixture
def openssl() -> str:
    """The openssl 3 CLI, our independent oracle. CI requires it (MODELSEAL_REQUIRE_OPENSSL)."""
    path = shutil.which("openssl")
    if path is None:
        if os.environ.get("MODELSEAL_REQUIRE_OPENSSL"):
            pytest.fail("openssl CLI required but not found")
        pytest.skip("openssl CLI not installed")
    return path


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, bytes], Path]:
    def write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    return write
