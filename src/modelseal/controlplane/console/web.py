"""The console's plumbing: templates, security headers, the session caller, CSRF, errors.

Why it looks like this (docs/console.md):

* Pages are server-rendered and work without script; htmx only enhances
  (polling a deployment's status, the NodePort recommendation, the audit
  chain check). Every state change is a POST form carrying the session's
  CSRF token as a hidden field (htmx sends the same token as
  ``X-CSRF-Token``), checked by ``people.session_caller`` exactly as the
  API checks its header: one rule, one implementation.
* The content security policy admits our own origin only, so there is no
  inline script, style or handler anywhere; chart data travels as a JSON
  ``<script type="application/json">`` block that our script parses.
* A refusal is a page, never a traceback: services raise
  ``ControlPlaneError``; the console renders its message with its status.
  Each action runs in a SAVEPOINT, so a refused action leaves nothing half
  written while the request's audit records still commit.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelseal.controlplane.deps import DB, AppState, State, client_address, require
from modelseal.controlplane.errors import ControlPlaneError, ForbiddenError, UnauthorizedError
from modelseal.controlplane.services import audit, people
from modelseal.controlplane.services.vendors import Caller
from modelseal.errors import ModelsealError

log = logging.getLogger("modelseal.console")

PREFIX = "/console"
HERE = Path(__file__).parent
STATIC = HERE / "static"
VENDOR_FILES = ("htmx.min.js", "chart.umd.min.js")
SETUP_COMMAND = "bash scripts/console-assets.sh"
#: the anonymous forms' (login) CSRF cookie: a random value the form must echo as an HMAC
PRE_COOKIE = "ms_console_pre"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_REPLACED = {h for h, _ in HEADERS} | {b"cache-control"}
ISSUERS = ("owner", "issuer")
OWNERS = ("owner",)


class SecurityHeaders:
    """CSP, nosniff, no referrer and no caching on every ``/console`` response.

    A plain ASGI wrapper, so it also covers static files, redirects and the
    error pages; the API's responses are left as they are. Pages are never
    cached (they hold customer data and one-time secrets); our static files
    may be for a few minutes.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        static = path.startswith(PREFIX + "/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                theirs = list(message.get("headers", []))
                # a stricter policy set by the route (a document download's sandbox) stays
                own_csp = any(k.lower() == b"content-security-policy" for k, _ in theirs)
                headers = [
                    (k, v)
                    for k, v in theirs
                    if (k.lower() not in _REPLACED)
                    or (own_csp and k.lower() == b"content-security-policy")
                ]
                headers += [(k, v) for k, v in HEADERS if not (own_csp and k == HEADERS[0][0])]
                headers.append(
                    (b"cache-control", b"max-age=300" if static else b"no-store, max-age=0")
                )
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


@cache
def missing_assets() -> tuple[str, ...]:
    """The vendored front-end files that are absent (logged once: the console still works,
    without charts and htmx, and every page's banner names the set-up command)."""
    gone = tuple(name for name in VENDOR_FILES if not (STATIC / "vendor" / name).is_file())
    if gone:
        log.warning(
            "console: front-end assets missing (%s); run %s", ", ".join(gone), SETUP_COMMAND
        )
    return gone


@cache
def templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.globals["PREFIX"] = PREFIX
    t.env.globals["SETUP_COMMAND"] = SETUP_COMMAND
    t.env.filters["when"] = _when
    t.env.filters["zip"] = lambda a, b: list(zip(a, b, strict=False))
    return t


def _when(ts: int | str | None) -> str:
    from datetime import UTC, datetime

    if ts is None:
        return "—"
    if isinstance(ts, str):  # already ISO (audit records)
        return ts.replace("T", " ")[:16] + " UTC"
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- who is calling -----------------------------------------------------------------------


class ConsoleRedirect(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Go elsewhere first (log in, or enrol TOTP)."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


class ConsoleRefusal(Exception):  # noqa: N818
    """A page-level refusal (CSRF, role): rendered as an error page with its status."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


async def form_data(request: Request) -> FormData:
    """The posted form (empty for GET): read here, before the sync dependencies that need
    its CSRF field. Parsing failures (a broken multipart body) are a 400 page."""
    if request.method in people.SAFE_METHODS:
        return FormData()
    try:
        form = await request.form()
    except Exception as exc:  # starlette raises its own MultiPartException, or ValueError
        raise ConsoleRefusal(400, "Bad request", f"the form could not be read: {exc}") from None
    # kept for ``page``: a refused form comes back filled in (secrets excepted)
    request.state.console_form = form
    return form


Form = Annotated[FormData, Depends(form_data)]


@dataclass(frozen=True)
class Viewer:
    """The logged-in person, and what the page needs to render for them."""

    who: Caller
    session_id: str
    csrf: str
    username: str

    def can(self, *roles: str) -> bool:
        return self.who.role in roles


def _session_id(request: Request) -> str:
    return request.cookies.get(people.SESSION_COOKIE, "").split(".", 1)[0]


def resolve(request: Request, st: AppState, db: Session, form: FormData, *, mfa: bool) -> Viewer:
    """The session behind the cookie; the CSRF token on anything but GET/HEAD."""
    cookie = request.cookies.get(people.SESSION_COOKIE)
    if not cookie:
        raise ConsoleRedirect(f"{PREFIX}/login")
    token = form.get("csrf")
    csrf = token if isinstance(token, str) else request.headers.get(people.CSRF_HEADER)
    try:
        who, row = people.session_caller(db, st.box, cookie, method=request.method, csrf=csrf)
    except UnauthorizedError:
        raise ConsoleRedirect(f"{PREFIX}/login") from None
    except ForbiddenError as exc:
        raise ConsoleRefusal(
            403,
            "Refused: the form's security token is missing or wrong",
            f"{exc}. Nothing was changed; reload the page and try again.",
        ) from None
    if mfa and not who.mfa:
        raise ConsoleRedirect(f"{PREFIX}/totp")
    audit.bind(
        db,
        actor={"kind": "session", "role": who.role, "user": who.user_id or ""},
        address=client_address(request),
    )
    user = people.user_of(db, who)
    return Viewer(who, row.id, people.csrf_token(st.box, row.id), user.username)


def viewer(request: Request, st: State, db: DB, form: Form) -> Viewer:
    return resolve(request, st, db, form, mfa=True)


def enrolling(request: Request, st: State, db: DB, form: Form) -> Viewer:
    return resolve(request, st, db, form, mfa=False)


Me = Annotated[Viewer, Depends(viewer)]
Enrolling = Annotated[Viewer, Depends(enrolling)]


def allow(me: Viewer, *roles: str) -> None:
    """The API's role rule (``deps.require``), as a page refusal."""
    try:
        require(*roles)(me.who)
    except ForbiddenError as exc:
        raise ConsoleRefusal(403, "Not allowed", str(exc)) from None


# --- forms -------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


class FormProblem(Exception):  # noqa: N818
    """Bad form input: the form comes back with this message."""


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def optional_int(form: FormData, name: str, what: str) -> int | None:
    raw = text(form, name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise FormProblem(f"{what} must be a whole number, not {raw[:40]!r}") from None


def listed(form: FormData, name: str) -> list[str]:
    """Checkbox groups and multi-selects (several values), or a comma-separated field."""
    values = [v for v in form.getlist(name) if isinstance(v, str)]
    if len(values) == 1 and "," in values[0]:
        values = values[0].split(",")
    return [v.strip() for v in values if v.strip()]


def upload_text(form: FormData, name: str, what: str, *, limit: int = 1 << 20) -> str:
    """A small uploaded text file (license, request, key), or the textarea ``<name>_text``.

    Read from the parsed form's spooled file, synchronously: the handlers run in the
    thread pool (they use the synchronous database session)."""
    value = form.get(name)
    if isinstance(value, UploadFile):
        data = value.file.read(limit + 1)
        if len(data) > limit:
            raise FormProblem(f"{what} is larger than {limit} bytes")
        if not data:
            return text(form, name + "_text")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormProblem(f"{what} is not UTF-8 text") from None
    return text(form, name) or text(form, name + "_text")


def build(schema: type[M], values: Mapping[str, Any]) -> M:
    """The API's own input schema, so the console accepts exactly what the API accepts."""
    try:
        return schema.model_validate(dict(values))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "input"
        raise FormProblem(f"{where}: {first.get('msg', 'invalid')}") from None


def attempt(db: Session, action: Callable[[], R]) -> R | str:
    """Run one service call in a SAVEPOINT: its result, or the message of its refusal
    (and nothing it wrote survives). Audit records of the refusal still commit."""
    try:
        with db.begin_nested():
            return action()
    except FormProblem as exc:
        return str(exc)
    except ControlPlaneError as exc:
        return str(exc)
    except ModelsealError as exc:
        return str(exc) or type(exc).__name__


# --- rendering ----------------------------------------------------------------------------


def page(
    request: Request,
    name: str,
    me: Viewer | None,
    *,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
    **context: Any,
) -> HTMLResponse:
    if "values" not in context:
        context["values"] = _refill(request) if status >= 400 else {}
    response = templates().TemplateResponse(
        request,
        name,
        {
            "me": me,
            "csrf": me.csrf if me else context.pop("csrf", ""),
            "error": error,
            "notice": notice,
            "missing_assets": missing_assets(),
            "nav": request.url.path,
            **context,
        },
        status_code=status,
    )
    return response


#: never echoed back into a refused form
_SECRET_FIELDS = frozenset({"csrf", "password", "totp", "code", "content_key"})


def _refill(request: Request) -> dict[str, str]:
    form = getattr(request.state, "console_form", None)
    if not isinstance(form, FormData):
        return {}
    return {k: v for k, v in form.items() if isinstance(v, str) and k not in _SECRET_FIELDS}


def problem(
    request: Request,
    me: Viewer | None,
    message: str,
    *,
    status: int = 404,
    title: str = "Not found",
) -> HTMLResponse:
    """A refusal or a missing thing, as a page with its status (never a 500)."""
    return page(request, "error.html", me, status=status, title=title, message=message)


def json_block(data: Any) -> str:
    """Data for our script, in a non-executed JSON block (``<`` escaped: no ``</script>``)."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def redirect(where: str) -> RedirectResponse:
    return RedirectResponse(where, status_code=303)


def download(data: bytes | str, filename: str, media_type: str) -> Response:
    body = data.encode() if isinstance(data, str) else data
    safe = "".join(c for c in filename if c.isalnum() or c in "._-") or "download"
    return Response(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )


def pre_token(st: AppState, request: Request) -> tuple[str, str]:
    """(cookie value, form token) for an anonymous form: double submit, the token an HMAC
    of the cookie under the server's key, so a forged form needs the victim's cookie."""
    value = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
    return value, people.csrf_token(st.box, "console-pre:" + value)


def check_pre_token(st: AppState, request: Request, form: FormData) -> None:
    import hmac

    value = request.cookies.get(PRE_COOKIE)
    sent = form.get("csrf")
    good = value is not None and isinstance(sent, str)
    if not good or not hmac.compare_digest(
        str(sent), people.csrf_token(st.box, "console-pre:" + str(value))
    ):
        raise ConsoleRefusal(
            403,
            "Refused: the form's security token is missing or wrong",
            "Nothing was changed; reload the login page and try again.",
        )
