"""/tokens: admins hand out API tokens over HTTP (the same as `autoslim token create`)."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.auth import create_token
from app.deps import AdminUser, SessionDep
from app.schemas import TokenCreate, TokenCreated
from store.tables import Role

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreated,
    responses={401: {"description": "No valid token."}, 403: {"description": "Not an admin token."}},
)
def create(body: TokenCreate, session: SessionDep, admin: AdminUser) -> TokenCreated:
    """Create a token for ``name``; the secret is in this response only."""
    secret = create_token(session, body.name, admin=body.admin)
    session.commit()
    return TokenCreated(name=body.name.strip(), role=Role.admin if body.admin else Role.user, token=secret)
