"""Self-service device replacement: the customer frees a seat with the license key.

A machine dies, or is replaced: its customer should not need the vendor to
move the license. With the license key (what they typed at activation)
they release a device of that license; the seat is free and the next
activation takes it. Without a limit, releasing and re-activating in turn
would let one seat serve a fleet, so the plan allows ``replacements`` per
``replacement_days`` (default 2 per 90 days); beyond it the release is
refused with ``TOO_MANY_REPLACEMENTS`` and the vendor (who is not limited)
decides. The count and the release happen under the license's lock, the
same one activation takes, so two releases at once cannot both squeeze
under the limit.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelseal.controlplane.errors import (
    ActivationRefusedError,
    InvalidRequestError,
    NotFoundError,
)
from modelseal.controlplane.models import Device, Plan, SeatRelease, new_id, now_s
from modelseal.controlplane.secretbox import SecretBox
from modelseal.controlplane.services import audit
from modelseal.controlplane.services.licensing import _lock_license
from modelseal.license.licensekey import LicenseKeyFormatError, normalize_license_key


def release(
    session: Session, box: SecretBox, *, license_key: str, device_ref: str
) -> tuple[Device, int, Plan] | ActivationRefusedError:
    """Deactivate ``device_ref`` of the key's license; returns (device, used, plan), or the
    refusal (returned, not raised, so that its audit record commits)."""
    try:
        key = normalize_license_key(license_key)
    except LicenseKeyFormatError as exc:
        raise InvalidRequestError(str(exc)) from None
    lic = _lock_license(session, box.lookup_hash(key), None)
    device = session.execute(
        select(Device).where(
            Device.license_id == lic.id,
            Device.status == "active",
            (Device.id == device_ref) | (Device.device_id == device_ref),
        )
    ).scalar_one_or_none()
    if device is None:
        raise NotFoundError(f"no active device {device_ref!r} on this license")
    plan = session.get(Plan, lic.plan_id)
    assert plan is not None
    since = now_s() - plan.replacement_days * 86400
    used = int(
        session.execute(
            select(func.count())
            .select_from(SeatRelease)
            .where(SeatRelease.license_id == lic.id, SeatRelease.released_at > since)
        ).scalar_one()
    )
    if plan.replacements is not None and used >= plan.replacements:
        audit.note(
            session,
            lic.vendor_id,
            "device.release_refused",
            {"target": {"kind": "device", "id": device.id, "license": lic.id}, "used": used},
            reason="TOO_MANY_REPLACEMENTS",
        )
        allowed = (
            "no self-service replacement"
            if plan.replacements == 0
            else f"{plan.replacements} per {plan.replacement_days} days"
        )
        return ActivationRefusedError(
            f"this license's devices were replaced {used} times in the last"
            f" {plan.replacement_days} days and its plan allows {allowed}:"
            " ask the vendor to deactivate the device",
            code="TOO_MANY_REPLACEMENTS",
        )
    audit.bind(session, actor={"kind": "license_key", "license": lic.id})
    device.status = "deactivated"
    session.add(
        SeatRelease(
            id=new_id("rel"),
            vendor_id=lic.vendor_id,
            license_id=lic.id,
            device_id=device.id,
            released_at=now_s(),
        )
    )
    return device, used + 1, plan
