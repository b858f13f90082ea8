"""The heartbeat path: authenticate the device, decide, record, sign the reply.

This is the server's hottest path (every device, every interval), so it
stays off the ORM: a few Core statements on one connection, one short
transaction, and the reply is sent only after that transaction commits
(nothing acknowledged is lost on a crash). Signing keys and device
credentials are cached per process once unsealed.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from modelseal.controlplane.errors import InvalidRequestError, UnauthorizedError
from modelseal.controlplane.models import Device, License
from modelseal.controlplane.secretbox import SecretBox
from modelseal.controlplane.services import licensing
from modelseal.controlplane.services.vendors import unseal_signing_key
from modelseal.crypto import PrivateKey
from modelseal.license import read_unverified
from modelseal.license.errors import LicenseFormatError
from modelseal.license.heartbeat import (
    HeartbeatRequest,
    HeartbeatVerdict,
    check_mac,
    sign_reply,
)

_LOOKUP = text(
    "SELECT d.id, d.status, d.credential_sealed, d.token, l.status, l.expires_at,"
    " l.vendor_id, p.heartbeat_interval, v.name"
    " FROM devices d JOIN licenses l ON l.id = d.license_id"
    " JOIN plans p ON p.id = l.plan_id JOIN vendors v ON v.id = l.vendor_id"
    " WHERE d.license_id = :lic AND d.device_id = :dev"
)
_RECORD = text(
    "UPDATE devices SET last_seen = :now,"
    " calls_used = CASE WHEN calls_used > :calls THEN calls_used ELSE :calls END,"
    " audit_seq = COALESCE(:seq, audit_seq), audit_hash = COALESCE(:hash, audit_hash)"
    " WHERE id = :id"
)
_ACTIVE_KEY = text(
    "SELECT kid, private_sealed FROM signing_keys WHERE vendor_id = :vendor AND active"
    " ORDER BY created_at DESC LIMIT 1"
)


class HeartbeatService:
    def __init__(self, engine: Engine, box: SecretBox, sessions: sessionmaker[Session]) -> None:
        self._engine = engine
        self._box = box
        self._sessions = sessions
        self._credentials: dict[tuple[str, str], bytes] = {}
        self._keys: dict[str, tuple[float, PrivateKey]] = {}
        self._lock = threading.Lock()

    def _credential(self, device_row_id: str, sealed: str) -> bytes:
        cache_key = (device_row_id, sealed[-16:])  # re-activation replaces the credential
        found = self._credentials.get(cache_key)
        if found is None:
            found = self._box.open(sealed, purpose="device_credential", row=device_row_id)
            with self._lock:
                if len(self._credentials) > 100_000:
                    self._credentials.clear()
                self._credentials[cache_key] = found
        return found

    def _signing_key(self, conn: Any, vendor_id: str) -> PrivateKey:
        cached = self._keys.get(vendor_id)
        if cached is not None and time.monotonic() - cached[0] < 10:
            return cached[1]
        kid, sealed = conn.execute(_ACTIVE_KEY, {"vendor": vendor_id}).one()
        key = unseal_signing_key(self._box, kid, sealed)
        self._keys[vendor_id] = (time.monotonic(), key)
        return key

    def handle(self, body: bytes, authorization: str | None) -> str:
        """Returns the signed reply; raises 4xx errors for requests it cannot attribute."""
        try:
            request = HeartbeatRequest.from_body(body)
        except LicenseFormatError as exc:
            raise InvalidRequestError(str(exc)) from None
        now = int(time.time())
        with self._engine.begin() as conn:
            rows = conn.execute(
                _LOOKUP, {"lic": request.license_id, "dev": request.device_id}
            ).all()
            match = None
            for row in rows:
                if check_mac(self._credential(row[0], row[2]), body, authorization):
                    match = row
                    break
            if match is None:
                # unknown device or wrong credential: nothing to sign for
                raise UnauthorizedError("heartbeat not authenticated for this device")
            device_row_id, device_status, _, _, lic_status, expires_at, vendor_id = match[:7]
            interval, vendor_name = match[7], match[8]
            renewed: str | None = None
            if lic_status == "revoked" or device_status != "active":
                code, message = (
                    "REVOKED",
                    (
                        "the license was revoked"
                        if lic_status == "revoked"
                        else "device deactivated"
                    ),
                )
            elif lic_status == "suspended":
                code, message = "SUSPENDED", "the license is suspended"
            elif expires_at is not None and expires_at <= now:
                code, message = "EXPIRED", "the license has expired"
            else:
                code, message = "VALID", ""
            conn.execute(
                _RECORD,
                {
                    "now": now,
                    "calls": request.calls_used,
                    "seq": request.audit_head[0] if request.audit_head else None,
                    "hash": request.audit_head[1] if request.audit_head else None,
                    "id": device_row_id,
                },
            )
            key = self._signing_key(conn, vendor_id)
        if code == "VALID" and read_unverified(match[3])[1].get("exp") != expires_at:
            renewed = self._renewal(device_row_id)
        verdict = HeartbeatVerdict(
            code=code,
            server_time=now,
            license_id=request.license_id,
            device_id=request.device_id,
            nonce=request.nonce,
            message=message,
            interval=interval,
            license_token=renewed,
        )
        return sign_reply(verdict, key, issuer=vendor_name)

    def _renewal(self, device_row_id: str) -> str | None:
        """Rare: the license's exp moved (renewal). Uses the ORM; committed before replying."""
        with self._sessions() as session, session.begin():
            device = session.get(Device, device_row_id)
            assert device is not None
            lic = session.get(License, device.license_id)
            assert lic is not None
            return licensing.renewed_token(session, self._box, lic, device)
