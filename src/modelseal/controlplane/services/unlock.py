"""Emergency unlock codes through the server: a person, a fresh TOTP code and a reason.

An unlock code lifts a device's lock for the license's ``unlock.hours``
(#4's scheme, ``guard/unlock.py``): a bypass of the licence's own checks.
So the server asks more than for anything else: an ``owner`` or ``issuer``
*user* (a session or a personal token; a service token alone is refused),
a TOTP code of that user that has not been used before, and a reason. All
three go into the audit record ``unlock.issued``; a refusal is audited as
``unlock.refused``.

Serials are handed out in order per device, each once (a unique
``(device, serial)``), up to the number of verifiers the device's license
carries; the seed never leaves the server.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelseal.controlplane.errors import ConflictError, ControlPlaneError, ForbiddenError
from modelseal.controlplane.models import Device, License, UnlockIssue, new_id, now_s
from modelseal.controlplane.secretbox import SecretBox
from modelseal.controlplane.services import audit, licensing, people
from modelseal.controlplane.services.vendors import Caller
from modelseal.guard.unlock import issue_unlock_code
from modelseal.license import read_unverified


def issue(
    session: Session,
    box: SecretBox,
    caller: Caller,
    *,
    device_ref: str,
    license_ref: str | None,
    reason: str,
    totp: str,
    address: str | None,
) -> dict[str, Any] | ControlPlaneError:
    """The next unlock code of a device, or the refusal (returned so its audit commits)."""
    device = licensing.get_device(session, caller, device_ref)
    lic = session.get(License, device.license_id)
    assert lic is not None
    if (
        license_ref is not None
        and licensing.get_license(session, box, caller, license_ref).id != lic.id
    ):
        raise ConflictError(f"device {device_ref!r} does not belong to license {license_ref!r}")
    target = {"kind": "device", "id": device.id, "license": lic.id, "device_id": device.device_id}

    def refuse(err: ControlPlaneError) -> ControlPlaneError:
        audit.note(
            session,
            caller.vendor_id,
            "unlock.refused",
            {"target": target, "why": err.code, "totp_verified": False},
            reason=reason,
        )
        return err

    if caller.role not in ("owner", "issuer"):
        return refuse(ForbiddenError(f"the {caller.role} role cannot issue unlock codes"))
    checked = people.require_fresh_totp(session, box, caller, totp, address)
    if isinstance(checked, ControlPlaneError):
        return refuse(checked)
    user, step = checked
    if device.status != "active":
        return refuse(ConflictError("the device is deactivated: it needs no unlock code"))
    if device.unlock_seed_sealed is None:
        return refuse(ConflictError("this device's license carries no unlock codes"))
    claims = read_unverified(device.token)[1]
    codes = claims.get("unlock") or {}
    verifiers = codes.get("verifiers") or []
    if session.get_bind().dialect.name == "postgresql":
        # one issuance per device at a time: serials are handed out in order
        session.execute(select(Device.id).where(Device.id == device.id).with_for_update())
    used = int(
        session.execute(
            select(func.count()).select_from(UnlockIssue).where(UnlockIssue.device_id == device.id)
        ).scalar_one()
    )
    if used >= len(verifiers):
        return refuse(
            ConflictError(f"all {len(verifiers)} unlock codes of this device were issued")
        )
    seed = box.open(device.unlock_seed_sealed, purpose="unlock_seed", row=device.id)
    code = issue_unlock_code(seed, license_id=lic.id, device_id=device.device_id, serial=used)
    session.add(
        UnlockIssue(
            id=new_id("unl"),
            vendor_id=caller.vendor_id,
            device_id=device.id,
            serial=used,
            user_id=user.id,
            reason=reason,
            issued_at=now_s(),
        )
    )
    audit.note(
        session,
        caller.vendor_id,
        "unlock.issued",
        {
            "target": target,
            "serial": used,
            "user": user.id,
            "username": user.username,
            "totp_verified": True,
            "totp_step": step,
        },
        reason=reason,
    )
    return {
        "code": code,
        "serial": used,
        "remaining": len(verifiers) - used - 1,
        "grant_hours": int(codes.get("hours", 0)),
        "license_id": lic.id,
        "device": device.id,
        "device_id": device.device_id,
    }
