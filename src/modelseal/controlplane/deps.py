"""FastAPI dependencies: the database session, the caller and their role."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelseal.controlplane.errors import ForbiddenError
from modelseal.controlplane.secretbox import SecretBox
from modelseal.controlplane.services import audit, people
from modelseal.controlplane.services.heartbeats import HeartbeatService
from modelseal.controlplane.services.vendors import Caller, authenticate
from modelseal.controlplane.settings import Settings


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    box: SecretBox
    heartbeats: HeartbeatService


def state(request: Request) -> AppState:
    app_state: AppState = request.app.state.cp
    return app_state


State = Annotated[AppState, Depends(state)]


def db_session(st: State, request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, else rolled back.

    ``scope="function"`` matters: with FastAPI's default the code after
    ``yield`` (the commit) runs after the response is sent, so a crash could
    lose an order the client was already told about (the kill -9 test caught
    exactly that). Here the commit finishes before the response exists.
    """
    with st.sessions() as session, session.begin():
        audit.bind(session, actor={"kind": "anonymous"}, address=client_address(request))
        yield session


DB = Annotated[Session, Depends(db_session, scope="function")]
_bearer = HTTPBearer(auto_error=False, description="an API token: Authorization: Bearer mst_...")


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def caller(
    request: Request,
    st: State,
    db: DB,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """A bearer token first (the API is token-first), else a session cookie (people)."""
    cookie = request.cookies.get(people.SESSION_COOKIE)
    if credentials is None and cookie:
        who, _ = people.session_caller(
            db,
            st.box,
            cookie,
            method=request.method,
            csrf=request.headers.get(people.CSRF_HEADER),
        )
    else:
        who = authenticate(db, credentials.credentials if credentials else None)
        if who.user_id is not None:
            # a personal token: the user's current role, and nothing once they are disabled
            user = people.user_of(db, who)
            who = dataclasses.replace(who, role=user.role)
    actor: dict[str, str] = {"kind": who.via, "role": who.role}
    if who.token_id:
        actor["token"] = who.token_id
    if who.user_id:
        actor["user"] = who.user_id
    audit.bind(db, actor=actor, address=client_address(request))
    return who


Who = Annotated[Caller, Depends(caller)]


def require(*roles: str) -> Callable[[Caller], Caller]:
    def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if not who.mfa:
            raise ForbiddenError(
                "enrol a TOTP second factor first (POST /v1/session/totp)", code="mfa_required"
            )
        if who.role not in roles:
            raise ForbiddenError(f"the {who.role} role cannot do this (needs {' or '.join(roles)})")
        return who

    return check


Reader = Annotated[Caller, Depends(require("owner", "issuer", "auditor"))]
Issuer = Annotated[Caller, Depends(require("owner", "issuer"))]
Owner = Annotated[Caller, Depends(require("owner"))]
