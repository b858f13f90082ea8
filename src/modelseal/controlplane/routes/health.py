"""Liveness (the process answers) and readiness (the database answers, schema current)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from modelseal.controlplane import db
from modelseal.controlplane.deps import State
from modelseal.controlplane.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "database unreachable or not migrated"}},
)
def readyz(st: State) -> HealthOut | JSONResponse:
    try:
        revision = db.current_revision(st.engine)
    except Exception as exc:  # any driver error means "not ready", never a 500
        return JSONResponse({"status": f"database unreachable: {type(exc).__name__}"}, 503)
    if revision != db.head_revision():
        return JSONResponse({"status": "schema not migrated", "schema_revision": revision}, 503)
    return HealthOut(status="ready", schema_revision=revision)
