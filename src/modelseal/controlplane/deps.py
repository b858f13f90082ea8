"""FastAPI dependencies: the database session, the caller and their role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelseal.controlplane.errors import ForbiddenError
from modelseal.controlplane.secretbox import SecretBox
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


def db_session(st: State) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, else rolled back.

    ``scope="function"`` matters: with FastAPI's default the code after
    ``yield`` (the commit) runs after the response is sent, so a crash could
    lose an order the client was already told about (the kill -9 test caught
    exactly that). Here the commit finishes before the response exists.
    """
    with st.sessions() as session, session.begin():
        yield session


DB = Annotated[Session, Depends(db_session, scope="function")]
_bearer = HTTPBearer(auto_error=False, description="an API token: Authorization: Bearer mst_...")


def caller(
    db: DB, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    return authenticate(db, credentials.credentials if credentials else None)


def require(*roles: str) -> Callable[[Caller], Caller]:
    def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.role not in roles:
            raise ForbiddenError(f"the {who.role} role cannot do this (needs {' or '.join(roles)})")
        return who

    return check


Reader = Annotated[Caller, Depends(require("owner", "issuer", "auditor"))]
Issuer = Annotated[Caller, Depends(require("owner", "issuer"))]
Owner = Annotated[Caller, Depends(require("owner"))]
