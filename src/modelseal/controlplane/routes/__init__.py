"""Thin routers: parse, call one service function, shape the answer."""

from __future__ import annotations

from typing import Any

from modelseal.controlplane.schemas import ErrorOut


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the 4xx answers an operation can give."""
    text = {
        400: "malformed request",
        401: "missing or invalid credentials",
        403: "not allowed",
        404: "no such object (or another vendor's)",
        409: "conflicts with the current state",
        413: "request body too large",
        415: "unsupported media type (judged from the bytes)",
        422: "invalid request body or parameters",
    }
    return {c: {"model": ErrorOut, "description": text[c]} for c in codes}


AUTH = (401, 403, 422)
