"""A read-only, seekable file object over memory, so frameworks that want a
file (``torch.load``, ``torch.jit.load``) read decrypted bytes without a copy
of the whole model and without a temporary file."""

from __future__ import annotations

import io
from typing import Any

from modelseal.errors import MissingDependencyError


class MemoryReader(io.RawIOBase):
    def __init__(self, buffer: Any) -> None:
        super().__init__()
        self._view = memoryview(buffer).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        dest = memoryview(b).cast("B")
        n = max(0, min(len(dest), len(self._view) - self._pos))
        dest[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        end = (
            len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        )
        data = self._view[self._pos : end].tobytes()
        self._pos = max(self._pos, end)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = len(self._view) + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)


def import_torch() -> Any:
    """PyTorch, or a clear error naming the extra that installs it."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(
            "framework 'torch' needs PyTorch: pip install 'modelseal[torch]'"
        ) from None
    return torch
