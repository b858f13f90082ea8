"""Strict JSON parsing for everything modelseal reads from files or the network.

Duplicate keys are refused (two parsers could pick different copies, so a
signed or hashed document could mean two things) and so are the non-JSON
constants ``NaN``/``Infinity`` that Python's parser accepts by default,
and numbers Python would turn into them (``1e400`` parses as infinity: a
quota or a timestamp of infinity passes every ``<`` check) or refuse with an
untyped error (an integer of more than 4300 digits).
"""

from __future__ import annotations

import json
import math
from typing import Any


class StrictJSONError(ValueError):
    """Not strict JSON: malformed, a duplicate key, NaN/Infinity, or a number out of range."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJSONError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"number {text[:20]!r} is out of range")
    return value


def strict_loads(data: bytes | str) -> Any:
    """``json.loads`` that raises :class:`StrictJSONError` on anything but strict JSON."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_float=_float,
        )
    except StrictJSONError:
        raise
    # ValueError also covers an integer beyond sys.get_int_max_str_digits()
    except (ValueError, RecursionError) as exc:
        raise StrictJSONError(f"not valid JSON ({type(exc).__name__})") from None
