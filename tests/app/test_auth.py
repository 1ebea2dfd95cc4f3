"""Bearer tokens: 401 without one, 403 for admin-only routes, owners see only their searches."""

from __future__ import annotations

from sqlalchemy import select

from store.tables import Token


def test_missing_or_wrong_token_is_401(anonymous, app, valid):
    from fastapi.testclient import TestClient

    assert anonymous.get("/searches").status_code == 401
    assert anonymous.post("/searches", json=valid).status_code == 401
    wrong = TestClient(app, headers={"Authorization": "Bearer as_not-a-token"}).get("/searches")
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    basic = TestClient(app, headers={"Authorization": "Basic YTpi"}).get("/searches")
    assert basic.status_code == 401


def test_tokens_are_stored_hashed(app, tokens):
    with app.state.sessionmaker() as session:
        stored = session.scalars(select(Token.token_hash)).all()
    assert tokens["alice"] not in stored and all(len(h) == 64 for h in stored)


def test_users_see_only_their_own_searches_admins_see_all(alice, bob, admin, valid):
    mine = alice.post("/searches", json=valid).json()["id"]
    assert alice.get(f"/searches/{mine}").status_code == 200
    assert bob.get(f"/searches/{mine}").status_code == 404  # not told apart from a missing search
    assert bob.post(f"/searches/{mine}/cancel").status_code == 404
    assert mine not in [s["id"] for s in bob.get("/searches", params={"limit": 100}).json()["items"]]
    assert admin.get(f"/searches/{mine}").json()["owner"] == "alice"
    owned = admin.get("/searches", params={"owner": "alice", "limit": 100}).json()["items"]
    assert mine in [s["id"] for s in owned] and {s["owner"] for s in owned} == {"alice"}
    assert admin.post(f"/searches/{mine}/cancel").json()["status"] == "cancelled"


def test_only_admins_create_tokens(alice, admin, app):
    assert alice.post("/tokens", json={"name": "mallory", "admin": True}).status_code == 403
    created = admin.post("/tokens", json={"name": "carol"})
    assert created.status_code == 201 and created.json()["role"] == "user"
    from fastapi.testclient import TestClient

    carol = TestClient(app, headers={"Authorization": f"Bearer {created.json()['token']}"})
    assert carol.get("/searches").json()["items"] == []
    assert admin.post("/tokens", json={"name": ""}).status_code == 422
