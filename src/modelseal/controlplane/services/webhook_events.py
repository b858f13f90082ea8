"""Scheduled webhook events: what becomes true with time, not with a request.

``license.expiring`` (an active license's ``exp`` is within
``EXPIRING_DAYS``), ``heartbeat.missed`` (an active device of a heartbeat
plan has been silent for three intervals), ``usage.quota_near`` (a
license's reported calls, or with leases its calls leased, reach
``QUOTA_NEAR`` of its plan's quota). The
delivery worker scans for them every ``SCAN_SECONDS``; each occasion fires
once: a row in ``webhook_marks`` (unique per vendor, event, subject and
occasion) is written in the same transaction as the outbox rows, so two
processes scanning at once queue it once, and a renewal (a new ``exp``), a
new silence (a new ``last_seen``) makes a new occasion. Nothing is
scanned for a vendor without an endpoint subscribed to the event.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelseal.controlplane.models import (
    Device,
    License,
    Plan,
    WebhookEndpoint,
    WebhookMark,
    now_s,
)
from modelseal.controlplane.services import audit, webhooks

EXPIRING_DAYS: Final = 7
MISSED_INTERVALS: Final = 3
QUOTA_NEAR: Final = 0.9
SCHEDULED: Final = ("license.expiring", "heartbeat.missed", "usage.quota_near")


def _subscribed(session: Session) -> dict[str, set[str]]:
    """vendor id -> the scheduled events some endpoint of theirs wants."""
    out: dict[str, set[str]] = {}
    for vendor, events in session.execute(
        select(WebhookEndpoint.vendor_id, WebhookEndpoint.events).where(
            WebhookEndpoint.disabled_at.is_(None)
        )
    ):
        out.setdefault(vendor, set()).update(e for e in events if e in SCHEDULED)
    return {v: e for v, e in out.items() if e}


def _fire(
    session: Session, vendor: str, event: str, subject: str, occasion: str, data: dict[str, Any]
) -> bool:
    try:
        with session.begin_nested():
            session.add(
                WebhookMark(
                    vendor_id=vendor,
                    event=event,
                    subject=subject,
                    occasion=occasion,
                    created_at=now_s(),
                )
            )
    except IntegrityError:
        return False  # queued before (by us or by another process)
    webhooks.enqueue(session, [audit.Note(vendor, event, None, data)])
    return True


def scan(session: Session, *, now: int | None = None) -> int:
    """Queue every due scheduled event; returns how many. Run in one transaction."""
    now = now_s() if now is None else now
    fired = 0
    for vendor, events in sorted(_subscribed(session).items()):
        if "license.expiring" in events:
            expiring = session.execute(
                select(License.id, License.expires_at, License.customer_id).where(
                    License.vendor_id == vendor,
                    License.status == "active",
                    License.expires_at.is_not(None),
                    License.expires_at > now,
                    License.expires_at <= now + EXPIRING_DAYS * 86400,
                )
            ).all()
            for lic, exp, cust in expiring:
                data: dict[str, Any] = {
                    "target": {"kind": "license", "id": lic},
                    "expires_at": exp,
                    "days_left": (int(exp or now) - now) // 86400,
                    "customer": cust,
                }
                fired += _fire(session, vendor, "license.expiring", lic, str(exp), data)
        if "heartbeat.missed" in events:
            devices = session.execute(
                select(
                    Device.id,
                    Device.license_id,
                    Device.device_id,
                    Device.last_seen,
                    Device.activated_at,
                    Plan.heartbeat_interval,
                )
                .join(License, License.id == Device.license_id)
                .join(Plan, Plan.id == License.plan_id)
                .where(
                    Device.vendor_id == vendor,
                    Device.status == "active",
                    License.status == "active",
                    Plan.heartbeat_interval.is_not(None),
                )
            ).all()
            for dev, lic, device_id, seen, activated, interval in devices:
                last = seen if seen is not None else activated
                if now - int(last) < MISSED_INTERVALS * int(interval or 0):
                    continue
                data = {
                    "target": {"kind": "device", "id": dev, "license": lic},
                    "device_id": device_id,
                    "last_seen": seen,
                    "silent_seconds": now - int(last),
                    "interval": interval,
                }
                fired += _fire(session, vendor, "heartbeat.missed", dev, str(last), data)
        if "usage.quota_near" in events:
            used = (
                select(Device.license_id, func.sum(Device.calls_used).label("calls"))
                .where(Device.vendor_id == vendor)
                .group_by(Device.license_id)
                .subquery()
            )
            quotas = session.execute(
                select(License.id, Plan.max_calls, used.c.calls, License.calls_leased)
                .join(Plan, Plan.id == License.plan_id)
                .join(used, used.c.license_id == License.id)
                .where(License.vendor_id == vendor, Plan.max_calls.is_not(None))
            ).all()
            for lic, quota, calls, leased in quotas:
                # with leases (server-side quotas) the ledger is what runs out: calls
                # leased to devices count before the devices report spending them
                if not quota or max(int(calls or 0), int(leased or 0)) < QUOTA_NEAR * int(quota):
                    continue
                data = {
                    "target": {"kind": "license", "id": lic},
                    "calls_used": int(calls or 0),
                    "calls_leased": int(leased or 0),
                    "quota": quota,
                    "threshold": QUOTA_NEAR,
                }
                fired += _fire(session, vendor, "usage.quota_near", lic, str(quota), data)
    return fired
