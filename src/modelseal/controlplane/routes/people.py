"""People (users, sessions, TOTP), the server audit log, and MFA-gated unlock codes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from modelseal.controlplane import schemas as s
from modelseal.controlplane.deps import (
    DB,
    AppState,
    Owner,
    Reader,
    State,
    Who,
    client_address,
)
from modelseal.controlplane.errors import ControlPlaneError, ForbiddenError
from modelseal.controlplane.models import User, UserSession
from modelseal.controlplane.routes import AUTH, errors
from modelseal.controlplane.services import audit, people, unlock
from modelseal.controlplane.services.vendors import Caller
from modelseal.guard.audit import canonical_json

router = APIRouter(prefix="/v1", responses=errors(*AUTH))


def _fail(exc: ControlPlaneError) -> JSONResponse:
    """A refusal whose audit record and failure count must still commit (so: no raise)."""
    headers = {"Retry-After": "60"} if exc.status_code == 429 else None
    return JSONResponse(
        {"error": {"code": exc.code, "message": str(exc)}},
        status_code=exc.status_code,
        headers=headers,
    )


def _user(row: User) -> s.UserOut:
    return s.UserOut.model_validate(row, from_attributes=True)


def _person(who: Who) -> Caller:
    if who.via != "session":
        raise ForbiddenError("this needs a session (log in at POST /v1/session)")
    return who


Person = Annotated[Caller, Depends(_person)]


def set_session_cookies(response: Response, st: AppState, result: people.LoginResult) -> None:
    """The session cookie (``HttpOnly``, ``SameSite=Strict``) and the CSRF cookie, for the
    API's login and the console's alike."""
    secure = (st.settings.public_url or "").startswith("https://")
    # the CSRF cookie is readable by the console's script: it echoes it as X-CSRF-Token
    for name, value, httponly in (
        (people.SESSION_COOKIE, result.cookie, True),
        (people.CSRF_COOKIE, result.csrf, False),
    ):
        response.set_cookie(
            name,
            value,
            max_age=people.SESSION_SECONDS,
            httponly=httponly,
            samesite="strict",
            secure=secure,
            path="/",
        )


def clear_session_cookies(response: Response) -> None:
    response.delete_cookie(people.SESSION_COOKIE, path="/")
    response.delete_cookie(people.CSRF_COOKIE, path="/")


# --- sessions ------------------------------------------------------------------------------------


@router.post(
    "/session",
    response_model=s.SessionOut,
    tags=["people"],
    responses=errors(401, 422) | {429: {"model": s.ErrorOut, "description": "locked out"}},
)
def login(body: s.LoginIn, request: Request, st: State, db: DB) -> Response:
    """Log in: password, then a TOTP or recovery code once enrolled. Sets the session cookie
    (``HttpOnly``, ``SameSite=Strict``) and returns the CSRF token."""
    result = people.login(
        db,
        st.box,
        vendor=body.vendor,
        username=body.username,
        password=body.password,
        totp=body.totp,
        recovery_code=body.recovery_code,
        address=client_address(request),
    )
    if isinstance(result, ControlPlaneError):
        return _fail(result)
    out = s.SessionOut(
        user=_user(result.user),
        vendor=body.vendor,
        mfa=result.mfa,
        csrf_token=result.csrf,
        expires_at=result.expires_at,
    )
    response = JSONResponse(out.model_dump(mode="json"))
    set_session_cookies(response, st, result)
    return response


@router.get("/session", response_model=s.SessionOut, tags=["people"])
def whoami(st: State, db: DB, who: Person, request: Request) -> s.SessionOut:
    """The logged-in user and the session's CSRF token."""
    user = people.user_of(db, who)
    cookie = request.cookies.get(people.SESSION_COOKIE, "")
    sid = cookie.split(".", 1)[0]
    return s.SessionOut(
        user=_user(user),
        vendor=who.vendor_name,
        mfa=who.mfa,
        csrf_token=people.csrf_token(st.box, sid),
    )


@router.post("/session/logout", status_code=204, tags=["people"])
def logout(st: State, db: DB, who: Person, request: Request) -> Response:
    sid = request.cookies.get(people.SESSION_COOKIE, "").split(".", 1)[0]
    row = db.get(UserSession, sid)
    if row is not None and row.revoked_at is None:
        people.logout(db, row)
    response = Response(status_code=204)
    clear_session_cookies(response)
    return response


@router.post("/session/totp", response_model=s.TotpEnrolOut, tags=["people"], responses=errors(409))
def totp_enrol(st: State, db: DB, who: Person) -> s.TotpEnrolOut:
    """Start TOTP enrolment: the secret and QR code, shown this once."""
    user = people.user_of(db, who)
    return s.TotpEnrolOut(
        **people.begin_enrolment(db, st.box, user, issuer=f"modelseal {who.vendor_name}")
    )


@router.post(
    "/session/totp/confirm",
    response_model=s.RecoveryCodesOut,
    tags=["people"],
    responses=errors(409),
)
def totp_confirm(
    body: s.TotpConfirmIn, st: State, db: DB, who: Person, request: Request
) -> Response:
    """Confirm with a first code: TOTP is on, this session passes, recovery codes shown once."""
    user = people.user_of(db, who)
    try:
        codes = people.confirm_enrolment(db, st.box, user, body.code)
    except ForbiddenError as exc:
        people.record_failure(db, user, client_address(request), "totp_enrolment")
        return _fail(exc)
    sid = request.cookies.get(people.SESSION_COOKIE, "").split(".", 1)[0]
    row = db.get(UserSession, sid)
    if row is not None:
        row.mfa = True
    return JSONResponse(s.RecoveryCodesOut(recovery_codes=codes).model_dump())


@router.post("/session/password", status_code=204, tags=["people"])
def change_password(
    body: s.PasswordIn, st: State, db: DB, who: Person, request: Request
) -> Response:
    """Change your password. Every session of yours ends and your personal tokens are
    revoked; this session continues under a new cookie and a new CSRF token (in the
    ``ms_csrf`` cookie and from ``GET /v1/session``)."""
    if not who.mfa:
        raise ForbiddenError("enrol TOTP first", code="mfa_required")
    user = people.user_of(db, who)
    people.change_password(db, user, body.old, body.new)
    fresh = people.start_session(db, st.box, user, mfa=who.mfa, address=client_address(request))
    response = Response(status_code=204)
    set_session_cookies(response, st, fresh)
    return response


@router.post("/session/tokens", response_model=s.TokenCreated, status_code=201, tags=["people"])
def personal_token(body: s.TokenCreate, db: DB, who: Person) -> s.TokenCreated:
    """A token acting as you (your current role; dead once you are disabled): for the CLI.
    ``role`` is ignored: a personal token has its user's role."""
    if not who.mfa:
        raise ForbiddenError("enrol TOTP first", code="mfa_required")
    row, token = people.personal_token(db, who, body.name)
    return s.TokenCreated(
        id=row.id,
        name=row.name,
        role=row.role,
        created_at=row.created_at,
        revoked_at=None,
        token=token,
    )


# --- users (owner) ---------------------------------------------------------------------------


@router.get("/users", response_model=list[s.UserOut], tags=["people"])
def list_users(db: DB, who: Owner) -> list[s.UserOut]:
    return [_user(u) for u in people.list_users(db, who)]


@router.post(
    "/users", response_model=s.UserCreated, status_code=201, tags=["people"], responses=errors(409)
)
def create_user(body: s.UserCreate, db: DB, who: Owner) -> s.UserCreated:
    """A new user; without ``password`` one is generated and shown here once."""
    row, shown = people.create_user(
        db, who.vendor_id, username=body.username, role=body.role, password=body.password
    )
    return s.UserCreated(**_user(row).model_dump(), password=shown)


@router.get("/users/{ref}", response_model=s.UserOut, tags=["people"], responses=errors(404))
def get_user(ref: str, db: DB, who: Owner) -> s.UserOut:
    return _user(people.get_user(db, who, ref))


@router.post(
    "/users/{ref}/disable", response_model=s.UserOut, tags=["people"], responses=errors(404, 409)
)
def disable_user(ref: str, db: DB, who: Owner) -> s.UserOut:
    return _user(people.disable_user(db, who, ref))


@router.post(
    "/users/{ref}/role", response_model=s.UserOut, tags=["people"], responses=errors(404, 409)
)
def set_role(ref: str, body: s.RoleIn, db: DB, who: Owner) -> s.UserOut:
    return _user(people.set_role(db, who, ref, body.role))


@router.post(
    "/users/{ref}/reset-mfa", response_model=s.UserOut, tags=["people"], responses=errors(404)
)
def reset_mfa(ref: str, db: DB, who: Owner) -> s.UserOut:
    """Turn a user's TOTP off and end their sessions: they enrol again at next login."""
    return _user(people.reset_mfa(db, who, ref))


# --- the audit log -----------------------------------------------------------------------------


@router.get("/audit", response_model=list[s.AuditRecordOut], tags=["audit"])
def audit_list(
    db: DB,
    who: Reader,
    after: Annotated[
        int | None, Query(ge=-1, le=2**62, description="records with seq above this")
    ] = None,
    event: Annotated[str | None, Query(max_length=64, description="event name prefix")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[s.AuditRecordOut]:
    rows = audit.query(db, who.vendor_id, after_seq=after, event_prefix=event, limit=limit)
    return [s.AuditRecordOut(**audit.record_of(r)) for r in rows]


@router.get(
    "/audit/export",
    tags=["audit"],
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines"}},
)
def audit_export(st: State, who: Reader) -> StreamingResponse:
    """Every record, one canonical JSON line each (the device log's format), streamed."""

    def lines() -> Iterator[bytes]:
        with st.sessions() as session:
            for record in audit.iter_all(session, who.vendor_id, release=True):
                yield canonical_json(record) + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/audit/verify", response_model=s.AuditVerifyOut, tags=["audit"])
def audit_verify(st: State, db: DB, who: Reader) -> s.AuditVerifyOut:
    """Walk the vendor's chain under its key; names the first record that does not fit."""
    verdict = audit.verify_released(db, st.sessions, audit.AuditKeys(st.box), who.vendor_id)
    return s.AuditVerifyOut(**verdict.to_json())


# --- emergency unlock ---------------------------------------------------------------------------


async def _unlock_reason(request: Request) -> str | None:
    """The reason a refused caller gave, for the record (the body is not validated yet)."""
    try:
        data = await request.json()
    except ValueError:
        return None
    reason = data.get("reason") if isinstance(data, dict) else None
    return reason[:1000] if isinstance(reason, str) else None


def _unlock_issuer(
    ref: str,
    db: DB,
    who: Reader,
    reason: Annotated[str | None, Depends(_unlock_reason)],
) -> Caller:
    """Owner or issuer, like ``Issuer``; but a refusal for the role is audited as
    ``unlock.refused`` (the threat model says every refusal is; red team #12, finding 8).

    A dependency that refuses must raise, and a raise rolls the request's
    transaction back; so the record is committed here first. It is refused
    before the body is read, like every role check (the role table test).
    """
    if who.role in ("owner", "issuer"):
        return who
    target: dict[str, str] = {"kind": "device", "id": ref}
    audit.note(
        db,
        who.vendor_id,
        "unlock.refused",
        {"target": target, "why": "forbidden", "totp_verified": False},
        reason=reason,
    )
    db.commit()
    raise ForbiddenError(f"the {who.role} role cannot do this (needs owner or issuer)")


UnlockIssuer = Annotated[Caller, Depends(_unlock_issuer)]


@router.post(
    "/devices/{ref}/unlock-code",
    response_model=s.UnlockOut,
    status_code=201,
    tags=["admin"],
    responses=errors(404, 409) | {429: {"model": s.ErrorOut, "description": "locked out"}},
)
def unlock_code(
    ref: str, body: s.UnlockIn, st: State, db: DB, who: UnlockIssuer, request: Request
) -> Response:
    """Issue the device's next emergency unlock code: needs a person (session or personal
    token) with a fresh TOTP code, and a reason; both are audited."""
    result = unlock.issue(
        db,
        st.box,
        who,
        device_ref=ref,
        license_ref=body.license,
        reason=body.reason,
        totp=body.totp,
        address=client_address(request),
    )
    if isinstance(result, ControlPlaneError):
        return _fail(result)
    return JSONResponse(s.UnlockOut(**result).model_dump(), status_code=201)
