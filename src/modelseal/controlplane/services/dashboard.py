"""The console dashboard's figures, computed in one place.

One function (``figures``) returns every number and series the dashboard
shows, as plain data: the page renders it and a test can compare it with
the database. A new panel (e.g. device refusals by reason, issue #12's
report) is one more key here and one more block in the template.

What "heartbeats over time" means here: the server keeps no row per
heartbeat (the heartbeat path writes ``Device.last_seen`` and nothing else,
by design: bench/RESULTS.md), so the series counts devices by the hour in
which they were last heard from. A fleet that stops calling in shows as an
empty right-hand side of that chart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelseal.controlplane.models import Device, License, now_s
from modelseal.controlplane.platform.models import DeploymentRecord, GatewayApiKey
from modelseal.controlplane.services import reports

#: the activations chart covers this many UTC days, ending today
ACTIVATION_DAYS = 14
#: the heartbeat chart covers this many hours, ending with the current one
HEARTBEAT_HOURS = 24
#: "expiring soon": active licenses ending within this many days
EXPIRING_DAYS = 30


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _hour(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:00")


def _count_by(session: Session, column: Any, vendor_column: Any, vendor_id: str) -> dict[str, int]:
    rows = session.execute(
        select(column, func.count()).where(vendor_column == vendor_id).group_by(column)
    ).all()
    return {str(k): int(v) for k, v in rows}


def figures(session: Session, vendor_id: str, *, now: int | None = None) -> dict[str, Any]:
    """Everything the dashboard shows for one vendor (read-only; no caller checks here:
    every role may read the dashboard, the console checks the session)."""
    now = now_s() if now is None else now
    by_status: dict[str, int] = {}
    for row in reports.licenses_by_status(session, vendor_id, None):
        by_status[row["status"]] = by_status.get(row["status"], 0) + int(row["licenses"])

    first_day = now - (ACTIVATION_DAYS - 1) * 86400
    per_day = {
        row["day"]: int(row["activations"])
        for row in reports.activations(session, vendor_id, first_day - first_day % 86400)
    }
    days = [_day(first_day + i * 86400) for i in range(ACTIVATION_DAYS)]

    hour_start = now - now % 3600
    first_hour = hour_start - (HEARTBEAT_HOURS - 1) * 3600
    seen = [0] * HEARTBEAT_HOURS
    for (last_seen,) in session.execute(
        select(Device.last_seen).where(
            Device.vendor_id == vendor_id,
            Device.last_seen.is_not(None),
            Device.last_seen >= first_hour,
        )
    ):
        index = (int(last_seen or 0) - first_hour) // 3600
        if 0 <= index < HEARTBEAT_HOURS:
            seen[index] += 1

    devices = _count_by(session, Device.status, Device.vendor_id, vendor_id)
    phases = _count_by(session, DeploymentRecord.phase, DeploymentRecord.vendor_id, vendor_id)
    api_keys = session.execute(
        select(func.count())
        .select_from(GatewayApiKey)
        .where(GatewayApiKey.vendor_id == vendor_id, GatewayApiKey.revoked_at.is_(None))
    ).scalar_one()
    licenses = session.execute(
        select(func.count()).select_from(License).where(License.vendor_id == vendor_id)
    ).scalar_one()
    return {
        "licenses": int(licenses),
        "licenses_by_status": dict(sorted(by_status.items())),
        "devices": dict(sorted(devices.items())),
        "devices_active": int(devices.get("active", 0)),
        "activations": {"labels": days, "values": [per_day.get(d, 0) for d in days]},
        "heartbeats": {
            "labels": [_hour(first_hour + i * 3600) for i in range(HEARTBEAT_HOURS)],
            "values": seen,
        },
        "expiring": list(reports.expiring(session, vendor_id, None, days=EXPIRING_DAYS)),
        "deployments": dict(sorted(phases.items())),
        "api_keys": int(api_keys),
    }
