"""Reports for finance and support: CSV or JSON, streamed row by row from the ledger.

Each report is a generator of rows (dicts with fixed columns) over a
server-side cursor (``yield_per``), so a report of a million licenses costs
one batch of memory, and :func:`render` streams it as CSV (a header line,
then rows) or as a JSON array. Figures come straight from the tables the
API serves (licenses, devices, plans): ``tests/controlplane/test_reports.py``
recomputes them from the API's own lists.

``status`` in the licenses report is the effective one: an ``active``
license past its ``expires_at`` counts as ``expired``.

``refusals`` counts the Guard's ``refused`` records that devices shipped
with their heartbeats (``device_events``, guard/shipping.py), by reason code
and license; ``since`` is on the record's own time (when the device refused,
which may be long before it came back online to report it).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from modelseal.controlplane.errors import InvalidRequestError
from modelseal.controlplane.models import Customer, Device, DeviceEvent, License, Plan, now_s

KINDS: Final = ("licenses", "activations", "usage", "expiring", "refusals")
#: the device audit event of a refusal (guard/core.py ``_refuse``); its reason is the code
REFUSAL_EVENT: Final = "refused"
COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "licenses": ("plan", "status", "licenses", "active_devices"),
    "activations": ("day", "activations", "licenses"),
    "usage": (
        "customer",
        "license",
        "plan",
        "status",
        "devices",
        "calls_used",
        "quota",
        "quota_used_percent",
    ),
    "expiring": ("license", "customer", "plan", "status", "expires_at", "days_left", "devices"),
    "refusals": ("reason", "customer", "license", "refusals", "devices", "first_at", "last_at"),
}
BATCH: Final = 500


def _status(lic_status: str, expires_at: int | None, now: int) -> str:
    if lic_status == "active" and expires_at is not None and expires_at <= now:
        return "expired"
    return lic_status


def _iso(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def licenses_by_status(
    session: Session, vendor_id: str, since: int | None
) -> Iterator[dict[str, Any]]:
    now = now_s()
    counts: dict[tuple[str, str], list[int]] = {}
    active = dict(
        session.execute(
            select(Device.license_id, func.count())
            .where(Device.vendor_id == vendor_id, Device.status == "active")
            .group_by(Device.license_id)
        ).all()
    )
    q = (
        select(License.id, License.status, License.expires_at, Plan.name)
        .join(Plan, Plan.id == License.plan_id)
        .where(License.vendor_id == vendor_id)
    )
    if since is not None:
        q = q.where(License.created_at >= since)
    for lic_id, status, exp, plan in session.execute(q.execution_options(yield_per=BATCH)):
        cell = counts.setdefault((plan, _status(status, exp, now)), [0, 0])
        cell[0] += 1
        cell[1] += int(active.get(lic_id, 0))
    for (plan, status), (n, devices) in sorted(counts.items()):
        yield {"plan": plan, "status": status, "licenses": n, "active_devices": devices}


def activations(session: Session, vendor_id: str, since: int | None) -> Iterator[dict[str, Any]]:
    days: dict[str, tuple[int, set[str]]] = {}
    q = select(Device.activated_at, Device.license_id).where(Device.vendor_id == vendor_id)
    if since is not None:
        q = q.where(Device.activated_at >= since)
    for at, lic in session.execute(q.execution_options(yield_per=BATCH)):
        day = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")
        n, lics = days.get(day, (0, set()))
        lics.add(lic)
        days[day] = (n + 1, lics)
    for day in sorted(days):
        n, lics = days[day]
        yield {"day": day, "activations": n, "licenses": len(lics)}


def usage(session: Session, vendor_id: str, since: int | None) -> Iterator[dict[str, Any]]:
    now = now_s()
    per_license = (
        select(
            Device.license_id.label("lic"),
            func.count().label("devices"),
            func.coalesce(func.sum(Device.calls_used), 0).label("calls"),
        )
        .where(Device.vendor_id == vendor_id)
        .group_by(Device.license_id)
        .subquery()
    )
    q = (
        select(
            Customer.name,
            License.id,
            Plan.name,
            License.status,
            License.expires_at,
            Plan.max_calls,
            per_license.c.devices,
            per_license.c.calls,
        )
        .join(Customer, Customer.id == License.customer_id)
        .join(Plan, Plan.id == License.plan_id)
        .outerjoin(per_license, per_license.c.lic == License.id)
        .where(License.vendor_id == vendor_id)
        .order_by(Customer.name, License.created_at, License.id)
    )
    if since is not None:
        q = q.where(License.created_at >= since)
    for cust, lic, plan, status, exp, quota, devices, calls in session.execute(
        q.execution_options(yield_per=BATCH)
    ):
        used = int(calls or 0)
        yield {
            "customer": cust,
            "license": lic,
            "plan": plan,
            "status": _status(status, exp, now),
            "devices": int(devices or 0),
            "calls_used": used,
            "quota": quota,
            "quota_used_percent": None if not quota else round(100 * used / quota, 2),
        }


def expiring(
    session: Session, vendor_id: str, since: int | None, *, days: int = 30
) -> Iterator[dict[str, Any]]:
    now = now_s()
    active = dict(
        session.execute(
            select(Device.license_id, func.count())
            .where(Device.vendor_id == vendor_id, Device.status == "active")
            .group_by(Device.license_id)
        ).all()
    )
    q = (
        select(License.id, Customer.name, Plan.name, License.status, License.expires_at)
        .join(Customer, Customer.id == License.customer_id)
        .join(Plan, Plan.id == License.plan_id)
        .where(
            License.vendor_id == vendor_id,
            License.status == "active",
            License.expires_at.is_not(None),
            License.expires_at > now,
            License.expires_at <= now + days * 86400,
        )
        .order_by(License.expires_at, License.id)
    )
    if since is not None:
        q = q.where(License.created_at >= since)
    for lic, cust, plan, status, exp in session.execute(q.execution_options(yield_per=BATCH)):
        yield {
            "license": lic,
            "customer": cust,
            "plan": plan,
            "status": status,
            "expires_at": _iso(exp),
            "days_left": (int(exp or now) - now) // 86400,
            "devices": int(active.get(lic, 0)),
        }


def refusals(session: Session, vendor_id: str, since: int | None) -> Iterator[dict[str, Any]]:
    """Refusals per reason code, customer and license (one row each), most frequent reason
    first; aggregated by the database, so the rows are as many as (reason, license) pairs."""
    reason = func.coalesce(DeviceEvent.reason, "unknown")
    q = (
        select(
            reason,
            Customer.name,
            License.id,
            func.count(),
            func.count(distinct(DeviceEvent.device_id)),
            func.min(DeviceEvent.at),
            func.max(DeviceEvent.at),
        )
        .join(License, License.id == DeviceEvent.license_id)
        .join(Customer, Customer.id == License.customer_id)
        .where(DeviceEvent.vendor_id == vendor_id, DeviceEvent.event == REFUSAL_EVENT)
        .group_by(reason, Customer.name, License.id)
        .order_by(reason, Customer.name, License.id)
    )
    if since is not None:
        q = q.where(DeviceEvent.at >= since)
    for code, cust, lic, n, devices, first, last in session.execute(
        q.execution_options(yield_per=BATCH)
    ):
        yield {
            "reason": code,
            "customer": cust,
            "license": lic,
            "refusals": int(n),
            "devices": int(devices),
            "first_at": _iso(first),
            "last_at": _iso(last),
        }


class RefusalCount(NamedTuple):
    """One line of "recent refusals by reason": a reason code and how often devices said it."""

    reason: str
    refusals: int


def refusal_counts(session: Session, vendor_id: str, since: int | None) -> list[RefusalCount]:
    """Refusals by reason code since ``since`` (Unix seconds, on the record's time; None: all),
    most frequent first: the console dashboard's panel. A handful of rows, one query."""
    reason = func.coalesce(DeviceEvent.reason, "unknown")
    q = (
        select(reason, func.count())
        .where(DeviceEvent.vendor_id == vendor_id, DeviceEvent.event == REFUSAL_EVENT)
        .group_by(reason)
        .order_by(func.count().desc(), reason)
    )
    if since is not None:
        q = q.where(DeviceEvent.at >= since)
    return [RefusalCount(str(code), int(n)) for code, n in session.execute(q)]


def rows(
    session: Session, vendor_id: str, kind: str, *, since: int | None, days: int
) -> Iterator[dict[str, Any]]:
    if kind == "licenses":
        return licenses_by_status(session, vendor_id, since)
    if kind == "activations":
        return activations(session, vendor_id, since)
    if kind == "usage":
        return usage(session, vendor_id, since)
    if kind == "expiring":
        return expiring(session, vendor_id, since, days=days)
    if kind == "refusals":
        return refusals(session, vendor_id, since)
    raise InvalidRequestError(f"unknown report {kind!r}; choose {', '.join(KINDS)}")


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text starting like a formula gets a quote
    (OWASP's CSV injection advice; customer names are vendor input)."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def render(kind: str, data: Iterator[dict[str, Any]], fmt: str) -> Iterator[bytes]:
    """CSV (header, then a line per row) or a JSON array, produced as the rows come."""
    if fmt == "json":
        yield b"["
        first = True
        for row in data:
            yield (b"" if first else b",") + json.dumps(row, sort_keys=True).encode()
            first = False
        yield b"]\n"
        return
    columns = COLUMNS[kind]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in data:
        writer.writerow({k: _cell(row[k]) for k in columns})
        if buf.tell() > 64 * 1024:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()
