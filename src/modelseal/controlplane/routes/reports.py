"""Reports, streamed as CSV or JSON (any role)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from modelseal.controlplane import db
from modelseal.controlplane.deps import Reader, State
from modelseal.controlplane.errors import InvalidRequestError
from modelseal.controlplane.routes import AUTH, errors
from modelseal.controlplane.services import reports

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=errors(*AUTH))

DESCRIPTIONS = {
    "licenses": "licenses by plan and effective status, with their active devices",
    "activations": "device activations per UTC day",
    "usage": "calls reported per license and customer, against the plan's quota",
    "expiring": "active licenses expiring within `days` days",
    "refusals": "refusals by reason code, customer and license, from device audit records "
    "shipped by heartbeats (`since`: on the record's time)",
}


def _since(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError("since must be a date or time, e.g. 2026-01-31") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def _route(kind: str) -> Callable[..., StreamingResponse]:
    def report(
        st: State,
        who: Reader,
        format: Annotated[str, Query(pattern="^(csv|json)$")] = "csv",
        since: Annotated[
            str | None, Query(max_length=40, description="ISO date/time (UTC if no zone)")
        ] = None,
        days: Annotated[int, Query(ge=1, le=3650, description="expiring: the horizon")] = 30,
    ) -> StreamingResponse:
        start = _since(since)

        def body() -> Iterator[bytes]:
            # SQLite: a deferred read (db.read_session), so streaming to a slow client
            # holds no lock writers wait on; PostgreSQL: a server-side cursor
            opened = db.read_session(st.engine) if st.settings.is_sqlite else st.sessions()
            with opened as session:
                rows = reports.rows(session, who.vendor_id, kind, since=start, days=days)
                yield from reports.render(kind, rows, format)

        media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
        headers = {"Content-Disposition": f'attachment; filename="{kind}.{format}"'}
        return StreamingResponse(body(), media_type=media, headers=headers)

    report.__name__ = f"report_{kind}"
    report.__doc__ = DESCRIPTIONS[kind]
    return report


for _kind in reports.KINDS:
    router.add_api_route(
        f"/{_kind}",
        _route(_kind),
        methods=["GET"],
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/csv": {}, "application/json": {}},
                "description": DESCRIPTIONS[_kind],
            }
        },
    )
