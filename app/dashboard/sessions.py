"""Dashboard login sessions: what the browser's cookie holds instead of the API token.

Logging in with an admin token opens a session: a fresh random secret goes into the cookie and
only its sha256 into ``admin_sessions``, with an expiry.  The session is valid while it is neither
expired nor revoked (logout) and its token is not revoked, and it is only ever a dashboard
credential: it is not an API token, so a cookie that leaks (or outlives a logout) opens nothing.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.auth import User, hash_token
from store.tables import AdminSession, Role, Token, utcnow

SESSION_PREFIX = "ads_"


def open_session(session: Session, user: User, hours: float) -> str:
    """Store a session for the admin ``user`` and return its secret (the cookie's value)."""
    secret = SESSION_PREFIX + secrets.token_urlsafe(32)
    session.add(
        AdminSession(id=hash_token(secret), token_id=user.token_id, expires_at=utcnow() + timedelta(hours=hours))
    )
    session.commit()
    return secret


def session_user(session: Session, secret: str) -> User | None:
    """The admin a live session belongs to; None when unknown, expired, revoked, or its token is."""
    row = session.execute(
        select(Token.name, Token.role, Token.id)
        .join(AdminSession, AdminSession.token_id == Token.id)
        .where(
            AdminSession.id == hash_token(secret),
            AdminSession.revoked_at.is_(None),
            AdminSession.expires_at > utcnow(),
            Token.revoked_at.is_(None),
            Token.role == Role.admin,
        )
    ).first()
    return User(name=row.name, role=row.role, token_id=row.id) if row else None


def revoke_session(session: Session, secret: str) -> None:
    """End a session (logout); an unknown or already ended one is left as it is."""
    session.execute(
        update(AdminSession)
        .where(AdminSession.id == hash_token(secret), AdminSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    session.commit()
