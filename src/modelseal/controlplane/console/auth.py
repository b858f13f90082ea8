"""Log in (password + TOTP), enrol TOTP (QR code, secret and recovery codes shown once),
log out. The checks are #12's people layer (services/people.py); this module only turns
its answers into pages and cookies."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from fastapi.responses import Response

from modelseal.controlplane.console.web import (
    PRE_COOKIE,
    PREFIX,
    Enrolling,
    Form,
    check_pre_token,
    page,
    pre_token,
    redirect,
    text,
)
from modelseal.controlplane.deps import DB, State, client_address
from modelseal.controlplane.errors import ConflictError, ControlPlaneError, ForbiddenError
from modelseal.controlplane.models import UserSession
from modelseal.controlplane.routes.people import clear_session_cookies, set_session_cookies
from modelseal.controlplane.services import people

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _login_page(
    request: Request, st: State, *, status: int = 200, error: str | None = None, **values: str
) -> Response:
    cookie, token = pre_token(st, request)
    response = page(
        request, "login.html", None, status=status, error=error, csrf=token, values=values
    )
    response.set_cookie(
        PRE_COOKIE, cookie, httponly=True, samesite="strict", path=PREFIX, max_age=3600
    )
    return response


@router.get("/login")
def login_form(request: Request, st: State) -> Response:
    return _login_page(request, st)


@router.post("/login")
def login(request: Request, st: State, db: DB, form: Form) -> Response:
    check_pre_token(st, request, form)
    vendor, username = text(form, "vendor"), text(form, "username")
    password = form.get("password")
    code = text(form, "totp").replace(" ", "")
    if not vendor or not username or not isinstance(password, str) or not password:
        return _login_page(
            request,
            st,
            status=422,
            error="Vendor, username and password are all needed.",
            vendor=vendor,
            username=username,
        )
    recovery = "-" in code or (len(code) > 6)
    result = people.login(
        db,
        st.box,
        vendor=vendor[:200],
        username=username[:200],
        password=password[:1024],
        totp=None if recovery or not code else code,
        recovery_code=code if recovery else None,
        address=client_address(request),
    )
    if isinstance(result, ControlPlaneError):
        # returned, not raised: the failure count and its audit record commit
        return _login_page(
            request,
            st,
            status=result.status_code,
            error=str(result),
            vendor=vendor,
            username=username,
        )
    response = redirect(f"{PREFIX}/" if result.mfa else f"{PREFIX}/totp")
    set_session_cookies(response, st, result)
    return response


@router.get("/totp")
def totp_start(request: Request, me: Enrolling, db: DB) -> Response:
    if people.user_of(db, me.who).totp_enabled:
        return redirect(f"{PREFIX}/")
    return page(request, "totp.html", me, step="start")


@router.post("/totp")
def totp_begin(request: Request, st: State, db: DB, me: Enrolling) -> Response:
    """A fresh secret, shown this once (text and QR code)."""
    user = people.user_of(db, me.who)
    try:
        shown = people.begin_enrolment(db, st.box, user, issuer=f"modelseal {me.who.vendor_name}")
    except ConflictError:
        return redirect(f"{PREFIX}/")
    qr = "data:image/svg+xml;base64," + base64.b64encode(shown["qr_svg"].encode()).decode()
    return page(request, "totp.html", me, step="scan", secret=shown["secret"], qr=qr)


@router.post("/totp/confirm")
def totp_confirm(request: Request, st: State, db: DB, me: Enrolling, form: Form) -> Response:
    user = people.user_of(db, me.who)
    try:
        codes = people.confirm_enrolment(db, st.box, user, text(form, "code"))
    except ForbiddenError as exc:
        people.record_failure(db, user, client_address(request), "totp_enrolment")
        return page(request, "totp.html", me, step="start", status=403, error=str(exc))
    except ConflictError as exc:
        return page(request, "totp.html", me, step="start", status=409, error=str(exc))
    row = db.get(UserSession, me.session_id)
    if row is not None:
        row.mfa = True
    return page(request, "totp.html", me, step="done", codes=codes)


@router.post("/logout")
def logout(db: DB, me: Enrolling) -> Response:
    row = db.get(UserSession, me.session_id)
    if row is not None and row.revoked_at is None:
        people.logout(db, row)
    response = redirect(f"{PREFIX}/login")
    clear_session_cookies(response)
    return response
