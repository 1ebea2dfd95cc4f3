"""Inputs an attacker or a careless client sends: each gets a 4xx naming the field, never a 500,
and no error echoes a large or non-JSON input back."""

from __future__ import annotations

import pytest


def test_overflowing_budgets_are_422(alice, valid):
    for budget in ("1e999", "1e400M"):
        response = alice.post("/searches", json={**valid, "macs": [budget]})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "macs", 0]


@pytest.mark.parametrize("number", ["1e999", "NaN", "-Infinity"])
def test_non_finite_json_numbers_are_422_without_echoing_them(alice, number):
    body = f'{{"arch": "mobilenet_v2", "dataset": "digits", "width_mult": {number}, "macs": ["2M"]}}'
    response = alice.post("/searches", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "width_mult"] and "input" not in error


@pytest.mark.parametrize(
    "path",
    ["/searches?offset=1e20", "/searches?offset=100000000000000000000", "/latency-tables?offset=100000000000000000000"],
)
def test_huge_offsets_are_422(alice, path):
    response = alice.get(path)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "offset"]


def test_huge_dashboard_offset_is_422(admin):
    assert admin.get("/admin", params={"offset": "100000000000000000000"}).status_code == 422


@pytest.mark.parametrize(
    "body", [{"name": "   "}, {"name": "x" * 101}, {"name": "bob", "admin": 0}, {"name": "bob", "admin": "yes"}]
)
def test_token_names_and_roles_are_strict(admin, body):
    response = admin.post("/tokens", json=body)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("dataset", "says"),
    [
        ("imagefolder:pe\x00ts", "NUL"),
        ("imagefolder:" + "x" * 300, "too long"),
        ("imagefolder:" + "/".join(["y" * 200] * 2), "does not exist"),
    ],
)
def test_unusable_dataset_paths_are_422(alice, valid, dataset, says):
    response = alice.post("/searches", json={**valid, "dataset": dataset})
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "dataset"] and says in error["msg"]


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"arch": "m" * 201}, ["body", "arch"]),
        ({"retrain": {"epochs": 10**9}}, ["body", "retrain", "epochs"]),
        ({"retrain": {"epochs": 1001}}, ["body", "retrain", "epochs"]),
        ({"train": {"warmup_epochs": 1e300}}, ["body", "train", "warmup_epochs"]),
        ({"search": {"score_size": 10**15}}, ["body", "search", "score_size"]),
        ({"search": {"calib_size": 10**15}}, ["body", "search", "calib_size"]),
        ({"macs": [10**30]}, ["body", "macs", 0]),
        ({"latency_ms": [1e300]}, ["body", "latency_ms", 0]),
        ({"export_formats": ["pt"] * 10}, ["body", "export_formats"]),
    ],
)
def test_every_field_is_bounded(alice, valid, change, loc):
    response = alice.post("/searches", json={**valid, **change})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc


def test_a_large_field_is_not_echoed_back(alice, valid):
    response = alice.post("/searches", json={**valid, "arch": "m" * 100_000})
    assert response.status_code == 422
    assert len(response.content) < 2000


def test_bodies_over_the_limit_are_413_before_parsing(alice, app, valid):
    limit = app.state.settings.max_body_bytes
    big = f'{{"arch": "{"m" * limit}"}}'
    response = alice.post("/searches", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert str(limit) in response.json()["detail"]
    chunked = alice.post(
        "/searches",
        content=iter([big[: limit // 2].encode(), big[limit // 2 :].encode()]),
        headers={"content-type": "application/json"},
    )
    assert chunked.status_code == 413


def test_an_infinite_budget_matches_no_result(admin, finished_search):
    response = admin.get(f"/searches/{finished_search['id']}/model", params={"macs": "1e999"})
    assert response.status_code == 404, response.text
    config = admin.get(f"/searches/{finished_search['id']}/config", params={"macs": "1e999"})
    assert config.status_code == 404


def test_empty_budget_query_strings_count_as_absent(admin, finished_search):
    everything = admin.get(f"/searches/{finished_search['id']}/config", params={"macs": "", "params": ""})
    assert everything.status_code == 200, everything.text
    assert len(everything.json()["budgets"]) == 2
    one = admin.get(f"/searches/{finished_search['id']}/config", params={"macs": "8.4M", "params": ""})
    assert one.status_code == 200 and one.json()["arch"] == "resnet18"


def test_class_folders_linking_out_of_the_data_roots_are_refused(alice, valid, data_root, tmp_path):
    tree = data_root / "linked"
    for name in ("a", "b"):
        (tree / name).mkdir(parents=True, exist_ok=True)
    (tmp_path / "secret").mkdir()
    (tree / "c").symlink_to(tmp_path / "secret", target_is_directory=True)
    response = alice.post("/searches", json={**valid, "dataset": "imagefolder:linked"})
    assert response.status_code == 422, response.text
    assert "links outside the data roots" in response.json()["detail"][0]["msg"]
