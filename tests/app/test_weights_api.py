"""/weights: trained weights uploaded once per owner and content, listed, and named by a search that is
checked at submit time against the network it will train."""

from __future__ import annotations

import hashlib
import io

import pytest
import torch
from safetensors.torch import save

import models
from app.auth import User
from app.search_service import get_visible
from engine.spec import PRETRAINED_TRAIN
from store.db import session_scope

NET = {"arch": "resnet18", "dataset": "digits", "input_size": 16, "width_mult": 0.25, "macs": ["5M"]}


def state_dict(num_classes: int = 10, width_mult: float = 0.25) -> dict[str, torch.Tensor]:
    return models.build("resnet18", num_classes=num_classes, input_size=16, width_mult=width_mult).state_dict()


def pt_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def upload(client, raw: bytes, **params):
    return client.post("/weights", content=raw, params=params, headers={"Content-Type": "application/octet-stream"})


@pytest.fixture(scope="module")
def weights_pt() -> bytes:
    return pt_bytes(state_dict())


@pytest.fixture(scope="module")
def uploaded(alice, weights_pt) -> dict:
    response = upload(alice, weights_pt, name="digits resnet")
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/weights/{response.json()['id']}"
    return response.json()


def test_an_upload_is_stored_once_per_owner_and_content(alice, bob, uploaded, weights_pt, settings):
    state = state_dict()
    assert {k: uploaded[k] for k in ("owner", "name", "format", "size_bytes", "tensors")} == {
        "owner": "alice",
        "name": "digits resnet",
        "format": "pt",
        "size_bytes": len(weights_pt),
        "tensors": len(state),
    }
    assert uploaded["sha256"] == hashlib.sha256(weights_pt).hexdigest()
    assert uploaded["parameters"] == sum(t.numel() for t in state.values() if t.is_floating_point())
    assert (settings.weights_root / uploaded["sha256"]).read_bytes() == weights_pt  # where workers read it
    again = upload(alice, weights_pt, name="another label")
    assert again.status_code == 200 and again.json() == uploaded
    theirs = upload(bob, weights_pt)
    assert theirs.status_code == 201 and theirs.json()["id"] != uploaded["id"] and theirs.json()["owner"] == "bob"
    assert sorted(p.name for p in settings.weights_root.iterdir()) == [uploaded["sha256"]]  # one file, no leftovers


def test_safetensors_are_recognised(alice):
    response = upload(alice, save({k: v.contiguous() for k, v in state_dict(num_classes=3).items()}))
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "safetensors"


def test_files_that_are_not_state_dicts_are_422_and_large_ones_413(alice, app, monkeypatch, settings):
    whole = io.BytesIO()
    torch.save(models.build("resnet18", num_classes=10, input_size=16, width_mult=0.25), whole)
    response = upload(alice, whole.getvalue())
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body"]
    assert "weights_only=True" in response.json()["detail"][0]["msg"]
    monkeypatch.setattr(app.state.settings, "max_weights_bytes", 1000)
    too_large = upload(alice, b"x" * 1001)
    assert too_large.status_code == 413 and "at most 1000 bytes" in too_large.json()["detail"]
    assert not [p for p in settings.weights_root.iterdir() if p.name.startswith(".upload")]


def test_weights_are_listed_and_shown_to_their_owner_and_admins_only(alice, bob, admin, uploaded):
    assert uploaded["id"] in [w["id"] for w in alice.get("/weights").json()["items"]]
    assert uploaded["id"] not in [w["id"] for w in bob.get("/weights").json()["items"]]
    assert uploaded["id"] in [w["id"] for w in admin.get("/weights", params={"owner": "alice"}).json()["items"]]
    assert bob.get(uploaded["links"]["self"]).status_code == 404
    assert alice.get(uploaded["links"]["self"]).json() == uploaded


def test_a_search_from_weights_gets_the_pretrained_recipe(alice, app, uploaded):
    response = alice.post("/searches", json={**NET, "weights": uploaded["id"], "train": {"batch_size": 32}})
    assert response.status_code == 202, response.text
    with session_scope(app.state.engine) as session:
        spec = get_visible(session, User("alice", "user", 0), response.json()["id"]).spec
    assert spec["weights"] == uploaded["id"]
    assert {k: spec["train"][k] for k in (*PRETRAINED_TRAIN, "batch_size")} == {**PRETRAINED_TRAIN, "batch_size": 32}


def test_another_users_weights_are_422_in_a_spec(bob, uploaded):
    response = bob.post("/searches", json={**NET, "weights": uploaded["id"]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "weights"]
    assert f"no weights {uploaded['id']}" in response.json()["detail"][0]["msg"]


def test_weights_of_another_shape_are_422_naming_the_key_and_both_shapes(alice):
    wide = upload(alice, pt_bytes(state_dict(width_mult=0.5))).json()
    response = alice.post("/searches", json={**NET, "weights": wide["id"]})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "weights"]
    assert "conv1.weight has shape [32, 3, 3, 3] in the weights but [16, 3, 3, 3] in the network" in error["msg"]


def test_a_head_for_another_class_count_is_accepted_and_snet_is_not(alice):
    four = upload(alice, pt_bytes(state_dict(num_classes=4))).json()
    assert alice.post("/searches", json={**NET, "weights": four["id"]}).status_code == 202
    snet = alice.post("/searches", json={**NET, "weights": four["id"], "train": {"mode": "snet"}})
    assert snet.status_code == 422 and snet.json()["detail"][0]["loc"] == ["body", "train", "mode"]
