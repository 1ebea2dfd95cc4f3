"""Bearer API tokens: a random secret handed out once, only its sha256 kept in the database.

A token's ``name`` is its owner: every search belongs to the name of the token that submitted it,
and several tokens may carry one name (rotation).  sha256 (no salt, no slow hash) is enough here
because the secret is 256 random bits, not a password a person chose.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.tables import Role, Token, utcnow

TOKEN_PREFIX = "as_"
LAST_USED_RESOLUTION_S = 60
"""``last_used_at`` is refreshed at most this often, so reads do not each become a database write."""


@dataclass(frozen=True)
class User:
    """Who is calling: the token's owner name and role."""

    name: str
    role: str
    token_id: int

    @property
    def is_admin(self) -> bool:
        return self.role == Role.admin


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, name: str, admin: bool = False) -> str:
    """Store a new token for ``name`` and return its secret, which is never shown again."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a token name must have 1 to 100 characters")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(Token(name=name, role=Role.admin if admin else Role.user, token_hash=hash_token(secret)))
    session.flush()
    return secret


def authenticate(session: Session, secret: str) -> User | None:
    """The user a secret belongs to, or None for an unknown or revoked token."""
    token = session.scalar(select(Token).where(Token.token_hash == hash_token(secret), Token.revoked_at.is_(None)))
    if token is None:
        return None
    now = utcnow()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > LAST_USED_RESOLUTION_S:
        token.last_used_at = now
        session.commit()
    return User(name=token.name, role=token.role, token_id=token.id)
