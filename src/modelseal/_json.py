"""Strict JSON parsing for everything modelseal reads from files or the network.

Duplicate keys are refused (two parsers could pick different copies, so a
signed or hashed document could mean two things) and so are the non-JSON
constants ``NaN``/``Infinity`` that Python's parser accepts by default.
"""

from __future__ import annotations

import json
from typing import Any


class StrictJSONError(ValueError):
    """Not strict JSON: malformed, a duplicate key, or a NaN/Infinity constant."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJSONError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not JSON")


def strict_loads(data: bytes | str) -> Any:
    """``json.loads`` that raises :class:`StrictJSONError` on anything but strict JSON."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except StrictJSONError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise StrictJSONError(f"not valid JSON ({type(exc).__name__})") from None
