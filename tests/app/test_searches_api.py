"""POST/GET /searches against a real database and broker (no worker: searches stay queued)."""

from __future__ import annotations

import pytest


def submit(client, body: dict, **headers: str) -> dict:
    response = client.post("/searches", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def test_submit_returns_202_with_id_links_and_location(alice, valid):
    response = alice.post("/searches", json=valid)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert response.headers["location"] == body["links"]["self"] == f"/searches/{body['id']}"
    assert body["links"]["config"] == f"/searches/{body['id']}/config"
    detail = alice.get(body["links"]["self"]).json()
    assert detail["spec"]["macs"] == [2_000_000]  # "2M" parsed
    assert detail["spec"]["train"]["epochs"] == 10  # engine default filled in
    assert detail["budgets"] == {"macs": [2_000_000]}
    assert detail["queue"] == "cpu" and detail["attempts"] == 0 and detail["results"] == []


def test_idempotency_key_returns_the_same_search(alice, bob, valid):
    first = alice.post("/searches", json=valid, headers={"Idempotency-Key": "k-1"})
    again = alice.post("/searches", json=valid, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other_user = bob.post("/searches", json=valid, headers={"Idempotency-Key": "k-1"})
    assert other_user.json()["id"] != first.json()["id"]  # keys are per owner
    changed = alice.post("/searches", json={**valid, "seed": 7}, headers={"Idempotency-Key": "k-1"})
    assert changed.status_code == 422
    assert changed.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


@pytest.mark.parametrize(
    ("change", "loc", "says"),
    [
        ({"arch": "vgg99"}, ["body", "arch"], "unknown architecture 'vgg99'"),
        ({"arch": "os:system"}, ["body", "arch"], "module 'os' is not on the allow-list of network modules"),
        (
            {"arch": "torchvision:vit_b_16"},
            ["body", "arch"],
            "not one of torchvision's conv/BN classification networks",
        ),
        ({"arch": "timm:no_such_net"}, ["body", "arch"], "unknown timm network 'no_such_net'"),
        ({"dataset": "mnist"}, ["body", "dataset"], "unknown dataset"),
        ({"dataset": "imagefolder:/etc"}, ["body", "dataset"], "outside the data roots"),
        ({"dataset": "imagefolder:../../etc"}, ["body", "dataset"], "outside the data roots"),
        ({"dataset": "imagefolder:nope"}, ["body", "dataset"], "does not exist"),
        ({"dataset": "imagefolder:empty"}, ["body", "dataset"], "at least 2 class folders"),
        ({"dataset": "cifar10:pets"}, ["body", "dataset"], "no CIFAR-10 data"),
        ({"macs": []}, ["body", "macs"], "at least one budget"),
        ({"macs": [0]}, ["body", "macs", 0], "greater than 0"),
        ({"macs": ["-3M"]}, ["body", "macs", 0], "cannot read"),
        ({"macs": ["2M", "2M"]}, ["body", "macs"], "repeated"),
        ({"macs": ["100M"]}, ["body", "macs", 0], "feasible range is 1.02M MACs to 4.75M MACs"),
        ({"macs": ["3M", 10]}, ["body", "macs", 1], "below the smallest"),
        ({"params": [1]}, ["body", "params", 0], "feasible range"),
        ({"latency_ms": [-1]}, ["body", "latency_ms", 0], "greater than 0"),
        ({"latency_ms": ["inf"]}, ["body", "latency_ms", 0], "finite number"),
        ({"train": {"epochs": 100000}}, ["body", "train", "epochs"], "more than the limit of 1000"),
        ({"train": {"epochs": 0}}, ["body", "train", "epochs"], "greater than or equal to 1"),
        ({"train": {"mode": "magic"}}, ["body", "train", "mode"], "usnet-nonuniform"),
        ({"train": {"epoch": 3}}, ["body", "train", "epoch"], "Extra inputs"),
        ({"width_mult": "wide"}, ["body", "width_mult"], "valid number"),
        ({"queue": "tpu"}, ["body", "queue"], "'cpu' or 'gpu'"),
        ({"device": "cuda:x"}, ["body", "device"], "pattern"),
    ],
)
def test_bad_input_is_422_naming_the_field(alice, valid, change, loc, says):
    response = alice.post("/searches", json={**valid, **change})
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == loc
    assert says in error["msg"]


NETWORK_MODULE = """
from torch import nn


def tiny(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
"""


def test_a_network_module_is_accepted_once_the_operator_allows_it(alice, valid, app, tmp_path, monkeypatch):
    """``MODULE:FUNCTION`` names code installed on the workers; only modules in AUTOSLIM_MODEL_MODULES."""
    (tmp_path / "operator_nets.py").write_text(NETWORK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    body = {**valid, "arch": "operator_nets:tiny", "width_mult": 1.0, "macs": ["60%"]}
    refused = alice.post("/searches", json=body)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "arch"]
    assert "'operator_nets' is not on the allow-list" in refused.json()["detail"][0]["msg"]
    monkeypatch.setattr(app.state.settings, "model_modules", ["operator_nets"])
    created = submit(alice, body)
    detail = alice.get(created["links"]["self"]).json()
    assert detail["spec"]["arch"] == "operator_nets:tiny"
    assert detail["budgets"] == {"macs": ["60%"]}  # a share stays a share until the worker knows the full network


def test_imagefolder_under_a_data_root_is_accepted_with_its_path_made_absolute(alice, valid, data_root):
    created = submit(alice, {**valid, "dataset": "imagefolder:pets"})
    spec = alice.get(f"/searches/{created['id']}").json()["spec"]
    assert spec["dataset"] == f"imagefolder:{data_root / 'pets'}"


@pytest.mark.parametrize("body", ["{not json", "[]", "null", ""])
def test_malformed_bodies_are_422_not_500(alice, body):
    response = alice.post("/searches", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "Traceback" not in response.text


def test_list_is_newest_first_paginated_and_filtered(bob, valid):
    ids = [submit(bob, {**valid, "seed": seed})["id"] for seed in range(3)]
    bob.post(f"/searches/{ids[0]}/cancel")
    page = bob.get("/searches", params={"limit": 2}).json()
    assert page["total"] >= 3 and page["limit"] == 2
    assert [item["id"] for item in page["items"]] == ids[::-1][:2]
    second = bob.get("/searches", params={"limit": 2, "offset": 2}).json()
    assert ids[0] in [item["id"] for item in second["items"]]
    cancelled = bob.get("/searches", params={"status": "cancelled"}).json()["items"]
    assert ids[0] in [item["id"] for item in cancelled] and all(i["status"] == "cancelled" for i in cancelled)
    assert bob.get("/searches", params={"status": "bogus"}).status_code == 422
    assert bob.get("/searches", params={"limit": 0}).status_code == 422


def test_unknown_search_is_404_everywhere(alice):
    for path in ("", "/config", "/trajectory", "/events"):
        assert alice.get(f"/searches/0123456789abcdef{path}").status_code == 404
    for action in ("cancel", "retry"):
        assert alice.post(f"/searches/{'x' * 100}/{action}").status_code == 404


def test_config_is_409_with_the_status_until_the_search_succeeds(alice, valid):
    created = submit(alice, valid)
    response = alice.get(created["links"]["config"], params={"macs": "2M"})
    assert response.status_code == 409
    assert response.json()["status"] == "queued"


def test_cancel_queued_then_retry_then_conflicts(alice, valid):
    created = submit(alice, valid)
    cancelled = alice.post(created["links"]["cancel"])
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    again = alice.post(created["links"]["cancel"])
    assert again.status_code == 409 and again.json()["status"] == "cancelled"
    retried = alice.post(created["links"]["retry"])
    assert retried.status_code == 202 and retried.json()["status"] == "queued"
    conflict = alice.post(created["links"]["retry"])
    assert conflict.status_code == 409 and conflict.json()["status"] == "queued"
    kinds = [e["kind"] for e in alice.get(created["links"]["events"]).json()]
    assert kinds == ["submitted", "cancelled", "retried"]
    assert alice.get(created["links"]["trajectory"]).json() == {
        "search_id": created["id"],
        "status": "queued",
        "steps": [],
    }


def test_openapi_documents_every_route_with_examples(anonymous):
    schema = anonymous.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/searches",
        "/searches/{search_id}",
        "/searches/{search_id}/config",
        "/searches/{search_id}/trajectory",
        "/searches/{search_id}/cancel",
        "/searches/{search_id}/retry",
        "/health",
    ):
        assert path in paths
    assert schema["components"]["schemas"]["SearchCreate"]["examples"][0]["arch"] == "mobilenet_v2"
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
