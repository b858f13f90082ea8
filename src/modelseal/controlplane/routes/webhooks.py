"""Webhook endpoints, their messages and delivery log, manual redelivery (owner)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query

from modelseal.controlplane import schemas as s
from modelseal.controlplane.deps import DB, Owner, State
from modelseal.controlplane.models import WebhookEndpoint, WebhookMessage
from modelseal.controlplane.routes import AUTH, errors
from modelseal.controlplane.services import webhooks

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=errors(*AUTH))


def _endpoint(row: WebhookEndpoint) -> s.WebhookOut:
    return s.WebhookOut.model_validate(row, from_attributes=True)


def _message(row: WebhookMessage) -> s.WebhookMessageOut:
    return s.WebhookMessageOut(
        msg_id=row.msg_id,
        event=row.event,
        license_id=row.license_id,
        status=row.status,  # type: ignore[arg-type]
        attempts=row.attempts,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        last_error=row.last_error,
        payload=json.loads(row.payload),
    )


@router.post("", response_model=s.WebhookCreated, status_code=201)
def create(body: s.WebhookCreate, st: State, db: DB, who: Owner) -> s.WebhookCreated:
    """Subscribe a URL to events; the signing secret is shown here once."""
    row, secret = webhooks.create_endpoint(
        db,
        st.box,
        who,
        url=body.url,
        events=body.events,
        allow_private=st.settings.webhook_allow_private,
    )
    return s.WebhookCreated(**_endpoint(row).model_dump(), secret=secret)


@router.get("", response_model=list[s.WebhookOut])
def list_(db: DB, who: Owner) -> list[s.WebhookOut]:
    return [_endpoint(r) for r in webhooks.list_endpoints(db, who)]


@router.get("/{ref}", response_model=s.WebhookOut, responses=errors(404))
def get(ref: str, db: DB, who: Owner) -> s.WebhookOut:
    return _endpoint(webhooks.get_endpoint(db, who, ref))


@router.post("/{ref}/disable", response_model=s.WebhookOut, responses=errors(404))
def disable(ref: str, db: DB, who: Owner) -> s.WebhookOut:
    return _endpoint(webhooks.disable_endpoint(db, who, ref))


@router.get("/{ref}/messages", response_model=list[s.WebhookMessageOut], responses=errors(404))
def messages(
    ref: str, db: DB, who: Owner, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[s.WebhookMessageOut]:
    """The endpoint's messages, newest first, with their delivery state."""
    return [_message(m) for m in webhooks.messages(db, who, ref, limit=limit)]


@router.get(
    "/{ref}/messages/{msg_id}/attempts",
    response_model=list[s.WebhookAttemptOut],
    responses=errors(404),
)
def attempts(ref: str, msg_id: str, db: DB, who: Owner) -> list[s.WebhookAttemptOut]:
    """The delivery log of one message: every try and its answer."""
    return [
        s.WebhookAttemptOut.model_validate(a, from_attributes=True)
        for a in webhooks.attempts(db, who, ref, msg_id)
    ]


@router.post(
    "/{ref}/messages/{msg_id}/redeliver",
    response_model=s.WebhookMessageOut,
    responses=errors(404, 409),
)
def redeliver(ref: str, msg_id: str, db: DB, who: Owner) -> s.WebhookMessageOut:
    """Queue a delivered or failed message again (same webhook-id)."""
    return _message(webhooks.redeliver(db, who, ref, msg_id))
