"""A search submitted while the message broker is down is stored, answered with a 503 that says so,
and reaches the queue once the broker is back: by a replay with the same Idempotency-Key, or by a
worker's reaper pass (`worker.dispatch.send_unsent`).  Runs on both backends: the embedded
filesystem queue loses its message folder; Redis is a closed port."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import update

from app.testing import REDIS_URL
from store.db import session_scope
from store.tables import Search, utcnow
from worker.celery_app import make_celery
from worker.reaper import reap


@pytest.fixture
def broken_broker(app, settings, tmp_path: Path) -> Iterator[Celery]:
    """The app's Celery swapped for one whose broker cannot take a message; restored afterwards."""
    if settings.broker_url:
        broken = make_celery(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    else:
        broken = make_celery(settings.model_copy(update={"home": tmp_path}))
        shutil.rmtree(tmp_path / "broker")
    good, app.state.celery = app.state.celery, broken
    yield broken
    app.state.celery = good


def queued_ids(settings) -> str:
    """Every search id carried by a message waiting in the cpu queue, as one string."""
    if settings.broker_url:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        raw = client.lrange(f"{settings.broker_prefix}cpu", 0, -1)
        client.close()
    else:
        raw = [p.read_bytes() for p in (settings.broker_folder / "messages").iterdir()]
    bodies = []
    for item in raw:
        message = json.loads(item)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        bodies.append(body)
    return "\n".join(bodies)


def test_a_search_submitted_while_the_broker_is_down_is_queued_by_its_replay(
    app, alice, valid, settings, broken_broker
):
    headers = {"Idempotency-Key": "job-42"}
    down = alice.post("/searches", json=valid, headers=headers)
    assert down.status_code == 503, down.text
    search_id = down.json()["id"]
    assert "broker is unavailable" in down.json()["detail"] and down.headers["Retry-After"]
    assert alice.get(f"/searches/{search_id}").json()["status"] == "queued"
    assert alice.post("/searches", json=valid, headers=headers).status_code == 503  # still down: still not sent
    assert search_id not in queued_ids(settings)

    app.state.celery = make_celery(settings)  # the broker is back (the fixture puts the app's own back)
    back = alice.post("/searches", json=valid, headers=headers)
    assert back.status_code == 202 and back.headers["Idempotent-Replayed"] == "true"
    assert back.json()["id"] == search_id
    assert search_id in queued_ids(settings)


def test_the_reaper_sends_searches_stored_while_the_broker_was_down(app, alice, valid, settings, broken_broker):
    down = alice.post("/searches", json={**valid, "seed": 7})
    assert down.status_code == 503
    search_id = down.json()["id"]
    assert reap(app.state.engine, broken_broker, 60.0).get(search_id) is None  # broker still down
    with session_scope(app.state.engine) as session:  # older than the grace a fresh submission gets
        session.execute(update(Search).where(Search.id == search_id).values(updated_at=utcnow() - timedelta(minutes=1)))
    assert reap(app.state.engine, make_celery(settings), 60.0)[search_id] == "sent"
    assert search_id in queued_ids(settings)
    assert reap(app.state.engine, make_celery(settings), 60.0).get(search_id) is None  # sent once


def test_a_retry_while_the_broker_is_down_is_503_and_sent_later(app, alice, valid, settings):
    search_id = alice.post("/searches", json={**valid, "seed": 9}).json()["id"]
    alice.post(f"/searches/{search_id}/cancel")
    good = app.state.celery
    app.state.celery = make_celery(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    try:
        retried = alice.post(f"/searches/{search_id}/retry")
    finally:
        app.state.celery = good
    assert retried.status_code == 503, retried.text
    assert alice.get(f"/searches/{search_id}").json()["status"] == "queued"
    with session_scope(app.state.engine) as session:
        session.execute(update(Search).where(Search.id == search_id).values(updated_at=utcnow() - timedelta(minutes=1)))
    assert reap(app.state.engine, good, 60.0)[search_id] == "sent"


def test_the_dashboard_retry_button_says_the_broker_is_down(app, alice, valid, settings, tokens):
    from fastapi.testclient import TestClient

    from app.dashboard.auth import COOKIE, csrf_token

    search_id = alice.post("/searches", json={**valid, "seed": 10}).json()["id"]
    alice.post(f"/searches/{search_id}/cancel")
    browser = TestClient(app, follow_redirects=False)
    browser.post("/admin/login", data={"token": tokens["admin"]})
    good = app.state.celery
    app.state.celery = make_celery(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    try:
        back = f"/admin/searches/{search_id}"
        pressed = browser.post(f"{back}/retry", data={"back": back, "csrf": csrf_token(browser.cookies[COOKIE])})
    finally:
        app.state.celery = good
    assert pressed.status_code == 303 and "broker+is+unavailable" in pressed.headers["location"]
