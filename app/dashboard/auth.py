"""Who may open the dashboard: an admin, by bearer token (scripts) or by a login cookie (browsers).

A browser cannot send an ``Authorization`` header on a plain link, so the login form takes an
admin token and opens a session (`app.dashboard.sessions`): the cookie holds the session's secret,
never the API token, in an HttpOnly, SameSite=Strict cookie: page scripts cannot read it and
other sites cannot make the browser send it.  Forms that change something (cancel, retry) also
carry a token derived from the cookie (`csrf_token`), checked on submit.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials

from app.auth import User, authenticate
from app.dashboard.sessions import session_user
from app.deps import SessionDep, bearer

COOKIE = "autoslim_session"
LOGIN_PATH = "/admin/login"


def login_url(next_path: str = "/admin") -> str:
    return f"{LOGIN_PATH}?next={quote(next_path, safe='/')}"


def login_required(next_path: str) -> HTTPException:
    """A 303 to the login form (an HTTPException, so no app-wide handler is needed to send it)."""
    return HTTPException(status.HTTP_303_SEE_OTHER, "log in first", headers={"Location": login_url(next_path)})


def safe_next(next_path: str | None) -> str:
    """Only paths inside the dashboard (no open redirect to another site after login)."""
    if next_path and next_path.startswith("/admin") and not next_path.startswith("//"):
        return next_path
    return "/admin"


def csrf_token(secret: str) -> str:
    """A per-login form token: a keyed hash of the cookie's secret (the secret itself is never shown)."""
    return hmac.new(secret.encode(), b"autoslim-dashboard-form", hashlib.sha256).hexdigest()[:32]


def credentials_of(request: Request, header: HTTPAuthorizationCredentials | None) -> tuple[str, bool] | None:
    """(secret, from_cookie) of the request: the bearer header wins over the cookie."""
    if header is not None:
        return header.credentials, False
    cookie = request.cookies.get(COOKIE)
    return (cookie, True) if cookie else None


def get_dashboard_admin(
    request: Request, session: SessionDep, header: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> User:
    """The admin calling; a request with no credentials goes to the login form, a bad or
    non-admin token gets 401 / 403 as in the API."""
    found = credentials_of(request, header)
    if found is None:
        raise login_required(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    secret, from_cookie = found
    user = session_user(session, secret) if from_cookie else authenticate(session, secret)
    if user is None:
        if from_cookie:  # an expired or revoked session in an old cookie: log in again
            raise login_required(request.url.path)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the dashboard needs an admin token")
    request.state.csrf = csrf_token(secret) if from_cookie else None
    return user


DashboardAdmin = Annotated[User, Depends(get_dashboard_admin)]


def check_csrf(request: Request, submitted: str | None) -> None:
    """403 for a cookie-authenticated form post without this login's form token."""
    expected = getattr(request.state, "csrf", None)
    if expected is not None and not hmac.compare_digest(expected, submitted or ""):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the form token is missing or stale; reload the page")
