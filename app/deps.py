"""FastAPI dependencies as ``Annotated`` aliases: handlers take ``session: SessionDep``, ``user: CurrentUser``.

The session factory and settings hang on ``app.state`` (put there by `create_app`), so tests and
`autoslim up` can build apps on different databases in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.auth import User, authenticate
from store.settings import Settings

log = logging.getLogger(__name__)
bearer = HTTPBearer(auto_error=False, description="An API token from `autoslim token create`.")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request.  Handlers commit their own writes before returning: the code after
    ``yield`` may run after the response is sent, too late for a client that reads right back.
    Closing rolls back whatever is left; on a connection the database has just dropped (restart,
    ``pg_terminate_backend``) that rollback fails, but there is nothing left to undo, so the
    connection is discarded and the request's answer stands."""
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        try:
            session.close()
        except DBAPIError as err:
            log.warning("discarding a dropped database connection: %s", err.orig)
            session.invalidate()


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]


def get_current_user(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> User:
    """401 without a valid bearer token."""
    user = authenticate(session, credentials.credentials) if credentials else None
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_admin_user(user: CurrentUser) -> User:
    """403 for a valid token without the admin role."""
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin token")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]
