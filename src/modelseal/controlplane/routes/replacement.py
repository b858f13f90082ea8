"""Self-service device replacement, authorised by the license key (no API token)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from modelseal.controlplane import schemas as s
from modelseal.controlplane.deps import DB, State, client_address
from modelseal.controlplane.errors import ControlPlaneError
from modelseal.controlplane.routes import errors
from modelseal.controlplane.services import audit, replacement

router = APIRouter(prefix="/v1", tags=["device"])


@router.post("/release", response_model=s.ReleaseOut, responses=errors(403, 404, 422))
def release(body: s.ReleaseIn, st: State, db: DB, request: Request) -> Response:
    """Free a device's seat with the license key, within the plan's replacement limit."""
    audit.bind(db, actor={"kind": "license_key"}, address=client_address(request))
    result = replacement.release(db, st.box, license_key=body.license_key, device_ref=body.device)
    if isinstance(result, ControlPlaneError):
        return JSONResponse(
            {"error": {"code": result.code, "message": str(result)}}, result.status_code
        )
    device, used, plan = result
    out = s.ReleaseOut(
        license_id=device.license_id,
        device=device.id,
        device_id=device.device_id,
        replacements_used=used,
        replacements_allowed=plan.replacements,
        period_days=plan.replacement_days,
    )
    return JSONResponse(out.model_dump())
