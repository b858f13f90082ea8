"""What devices call: activation with a license key, and signed heartbeats.

No API token here: activation is authorised by the license key, heartbeats
by the device credential only the bound device can compute.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from modelseal.controlplane import schemas as s
from modelseal.controlplane.deps import DB, State
from modelseal.controlplane.errors import PayloadTooLargeError
from modelseal.controlplane.routes import errors
from modelseal.controlplane.services import licensing
from modelseal.controlplane.services.heartbeats import heartbeat_reply
from modelseal.license.heartbeat import MAX_BODY_BYTES

router = APIRouter(prefix="/v1", tags=["device"])


@router.post(
    "/activate",
    response_model=s.ActivationOut,
    status_code=201,
    responses=errors(403, 404, 422),
)
def activate(body: s.ActivationIn, st: State, db: DB) -> s.ActivationOut:
    """Online activation: the device's request plus the license key the customer typed."""
    lic, device, token, again, warnings = licensing.activate(
        db,
        st.box,
        request_json=body.request,
        heartbeat_base_url=st.settings.heartbeat_base_url,
        license_key=body.license_key,
    )
    return s.ActivationOut(
        license_id=lic.id,
        device=device.id,
        device_id=device.device_id,
        license=token,
        reactivated=again,
        warnings=warnings,
    )


@router.post(
    "/heartbeat",
    response_model=s.HeartbeatOut,
    responses=errors(401, 409, 413, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def heartbeat(
    request: Request,
    st: State,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """A device's report, authenticated by ``Authorization: Modelseal-Device MAC``.

    Served by ``app.HeartbeatFastPath`` unless ``MODELSEAL_HEARTBEAT_FAST_PATH=0``.
    """
    # read as a stream and stop at the heartbeat's own limit: a chunked body
    # has no Content-Length for the app-wide limit to refuse up front
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLargeError(f"heartbeat larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    answer = await run_in_threadpool(heartbeat_reply, st.heartbeats, body, authorization)
    # a Response skips re-validating the model: the reply is one string we just made
    return Response(answer, media_type="application/json")
