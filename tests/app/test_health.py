"""/health checks the database and the broker for real."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app


def test_health_is_ok_on_a_working_backend(anonymous):
    response = anonymous.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_health_is_503_naming_a_dead_broker(settings):
    dead = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    response = TestClient(create_app(dead)).get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["database"] == "ok"
    assert "Error" in body["broker"]
