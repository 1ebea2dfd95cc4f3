"""/latency-tables: tables profiled on a device, uploaded, checked, listed, deleted, and named by a
search whose latency budgets and figures are then that device's.

The table is measured here, of the network of ``finished_search`` (ResNet-18 x0.25 at 16 px, every
step of 4-bin ladders), under a device name of its own, as ``autoslim profile --device-name`` writes it.
"""

from __future__ import annotations

import json

import pytest

from engine.latency import LatencyTable, measure_table
from engine.latency_runtimes import Timing, TorchRuntime
from models import build_supernet

DEVICE = "test board"


@pytest.fixture(scope="module")
def table_file() -> bytes:
    net = build_supernet("resnet18", 10, 16, 0.25)
    table = measure_table(
        net,
        TorchRuntime("cpu", threads=1),
        bins=4,
        max_levels=None,
        timing=Timing(blocks=2, block_s=0.0002, warmup=1),
        fit_configs=2,
    )
    table.key["device"] = DEVICE
    return json.dumps(table.to_dict()).encode()


@pytest.fixture(scope="module")
def uploaded(alice, table_file) -> dict:
    response = alice.post(
        "/latency-tables",
        params={"name": "bench board"},
        content=table_file,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/latency-tables/{response.json()['id']}"
    return response.json()


@pytest.fixture(scope="module")
def search_body(finished_recipe):
    """A search of the table's network (with ``finished_search``'s recipe) naming ``table_id``, changed by ``change``."""

    def body(table_id: str, **change) -> dict:
        return {**finished_recipe, "macs": [], "latency_ms": [0.01], "latency_table": table_id, **change}

    return body


def test_an_uploaded_table_describes_its_network_device_and_latency_range(uploaded, table_file):
    table = LatencyTable.from_dict(json.loads(table_file))
    space = build_supernet("resnet18", 10, 16, 0.25).space
    assert {
        k: uploaded[k]
        for k in ("owner", "name", "arch", "input_size", "width_mult", "num_classes", "bins", "nodes", "device")
    } == {
        "owner": "alice",
        "name": "bench board",
        "arch": "resnet18",
        "input_size": 16,
        "width_mult": 0.25,
        "num_classes": 10,
        "bins": 4,
        "nodes": 69,
        "device": DEVICE,
    }
    assert uploaded["runtime"] == table.describe()["runtime"] and "1 thread, batch 1" in uploaded["runtime"]
    assert uploaded["min_ms"] == pytest.approx(table.predict(space.smallest()))
    assert uploaded["max_ms"] == pytest.approx(table.predict(space.full()))
    assert uploaded["size_bytes"] == len(table_file)


def test_tables_are_listed_and_shown_to_their_owner_and_admins_only(alice, bob, admin, uploaded, table_file):
    assert uploaded["id"] in [t["id"] for t in alice.get("/latency-tables").json()["items"]]
    assert uploaded["id"] not in [t["id"] for t in bob.get("/latency-tables").json()["items"]]
    assert uploaded["id"] in [t["id"] for t in admin.get("/latency-tables", params={"owner": "alice"}).json()["items"]]
    assert bob.get(uploaded["links"]["self"]).status_code == 404
    assert admin.get(uploaded["links"]["self"]).json() == uploaded
    assert alice.get(uploaded["links"]["file"]).json() == json.loads(table_file)


def cut(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def edited(raw: bytes, change) -> bytes:
    data = json.loads(raw)
    change(data)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("damage", "loc", "message"),
    [
        (cut, ["body"], "not a complete JSON document"),
        (lambda raw: b"\xff\xfe not text", ["body"], "not UTF-8 text"),
        (
            lambda raw: edited(raw, lambda d: d.update(format="autoslim.latency-table/2")),
            ["body", "format"],
            "is not 'autoslim.latency-table/4'",
        ),
        (
            lambda raw: edited(raw, lambda d: d["nodes"].pop("layer3_0_conv1")),
            ["body", "nodes"],
            "has no timing of 1 of the 69 nodes of resnet18 (the first: 'layer3_0_conv1')",
        ),
        (
            lambda raw: edited(raw, lambda d: d["key"]["net"].update(arch="lenet")),
            ["body", "key", "net"],
            "describes no network autoslim can build",
        ),
        (
            lambda raw: edited(raw, lambda d: d["key"]["net"].update(width_mult=0.5)),
            ["body", "nodes", "conv1", "levels", 0],
            "spans 8..16 channels of [conv1], which spans 8..32",
        ),
    ],
)
def test_a_bad_table_file_is_a_422_pointing_into_the_file(alice, table_file, damage, loc, message):
    response = alice.post("/latency-tables", content=damage(table_file), headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == loc and message in error["msg"]


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        ({"input_size": 32}, ["body", "latency_table"], "the table is for input_size 16, the search runs 32"),
        (
            {"arch": "mobilenet_v2"},
            ["body", "latency_table"],
            "the table is for arch resnet18, the search runs mobilenet_v2",
        ),
        (
            {"search": {"bins": 8}},
            ["body", "latency_table"],
            "which a search with 8 bins visits (the table was profiled with 4 bins); profile with --bins 8",
        ),
        ({"train": {"mode": "mutual"}}, ["body", "latency_table"], "a MutualNet search"),
        ({"latency_ms": [1000.0]}, ["body", "latency_ms", 0], "above the full configuration; feasible range is"),
    ],
)
def test_a_search_naming_a_table_that_does_not_fit_it_is_a_422_saying_why(
    alice, uploaded, search_body, change, loc, message
):
    response = alice.post("/searches", json=search_body(uploaded["id"], **change))
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == loc and message in error["msg"]
    if loc[-2:] == ["latency_ms", 0]:
        assert f"on {DEVICE}, torch" in error["msg"]


def test_only_the_owner_can_name_a_table(alice, bob, uploaded, search_body):
    for client, table_id in ((bob, uploaded["id"]), (alice, "0" * 32)):
        response = client.post("/searches", json=search_body(table_id))
        assert response.status_code == 422
        assert response.json()["detail"][0]["msg"].startswith(f"no latency table {table_id}")


def test_a_table_in_use_cannot_be_deleted_until_its_searches_end(alice, table_file, search_body):
    table = alice.post("/latency-tables", content=table_file).json()
    low = table["min_ms"] + 0.5 * (table["max_ms"] - table["min_ms"])
    search = alice.post("/searches", json=search_body(table["id"], latency_ms=[low]))
    assert search.status_code == 202, search.text
    assert alice.get(f"/searches/{search.json()['id']}").json()["spec"]["latency_table"] == table["id"]
    refused = alice.delete(table["links"]["self"])
    assert refused.status_code == 409 and search.json()["id"] in refused.json()["detail"]
    assert alice.post(f"/searches/{search.json()['id']}/cancel").status_code == 202
    assert alice.delete(table["links"]["self"]).status_code == 204
    assert alice.get(table["links"]["self"]).status_code == 404


@pytest.fixture(scope="module")
def table_search(alice, uploaded, search_body, run_here) -> dict:
    """A search against the uploaded table, run by the worker's task code, with the supernet of ``finished_search``."""
    budget = round(uploaded["min_ms"] + 0.4 * (uploaded["max_ms"] - uploaded["min_ms"]), 4)
    return run_here(alice, search_body(uploaded["id"], latency_ms=[budget]))


def test_answers_carry_latency_on_the_table_device_and_on_the_worker(alice, uploaded, table_search, table_file):
    table = LatencyTable.from_dict(json.loads(table_file))
    (result,) = table_search["results"]
    assert result["latency_ms"] <= result["target"]
    assert (result["latency_device"], result["latency_runtime"]) == (DEVICE, uploaded["runtime"])
    assert result["worker_latency_ms"] > 0 and result["worker_latency_device"] != DEVICE
    config = alice.get(result["config"]).json()
    widths = build_supernet("resnet18", 10, 16, 0.25).space.from_layers(config["channels"])
    assert config["latency_ms"] == result["latency_ms"] == round(table.predict(widths), 6)
    assert {config[k] for k in ("latency_device", "latency_runtime")} == {DEVICE, uploaded["runtime"]}
    assert config["worker_latency_ms"] == result["worker_latency_ms"]


def test_the_dashboard_names_the_device_of_each_latency_figure(app, tokens, table_search):
    from fastapi.testclient import TestClient

    browser = TestClient(app)
    browser.post("/admin/login", data={"token": tokens["admin"], "next": "/admin"})
    page = browser.get(f"/admin/searches/{table_search['id']}").text
    (result,) = table_search["results"]
    assert f"on {DEVICE}, {result['latency_runtime']}" in page
    assert f"{result['worker_latency_ms']:.3f} ms on the worker ({result['worker_latency_device']}" in page
