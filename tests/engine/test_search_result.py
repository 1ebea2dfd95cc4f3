"""The search result's typed form (`engine.spec.SearchResult`) reads back exactly what it writes,
keeps optional figures out of the JSON when absent, and refuses keys it does not know."""

from __future__ import annotations

import json

import pytest

from engine.spec import BudgetAnswer, SearchResult, SupernetRef, TrajectoryPoint, UniformPoint

STEP0 = TrajectoryPoint(
    0, {"g0": 16, "g1": 32}, 8_762_624, 700_000, 1.25, 96.0, 0.14, removed=None, channels={"conv1": 16, "fc": 32}
)
STEP1 = TrajectoryPoint(
    1, {"g0": 8, "g1": 32}, 6_400_000, 650_000, 1.0, 95.5, 0.16, removed="g0", channels={"conv1": 8, "fc": 32}
)
ANSWER = BudgetAnswer(
    "macs",
    6.5e6,
    6_400_000,
    650_000,
    1.0,
    95.5,
    0.16,
    {"conv1": 8, "fc": 32},
    {"config": "budgets/macs-6.5M/config.json", "pt": "budgets/macs-6.5M/model.pt"},
    step=1,
    latency_device="cpu",
    latency_runtime="torch",
)
RESULT = SearchResult(
    [ANSWER],
    [STEP0, STEP1],
    STEP0,
    [UniformPoint(0.5, 2_200_000, 180_000, 80.0, 0.6)],
    SupernetRef("abc", "/cache/abc/final.pt", False),
    {"total_s": 12.5},
    {"arch": "resnet18", "dataset": "digits"},
    "hash",
)


def test_the_result_round_trips_through_json():
    assert SearchResult.from_dict(json.loads(json.dumps(RESULT.to_dict()))) == RESULT


def test_absent_figures_stay_out_of_the_json_and_each_point_says_what_it_is():
    answer = RESULT.to_dict()["budgets"][0]
    assert "test_accuracy" not in answer and "worker_latency_ms" not in answer and "ratio" not in answer
    assert answer["step"] == 1 and answer["latency_device"] == "cpu"
    mutual = TrajectoryPoint(3, {"g0": 8}, 1_000_000, 90_000, None, 70.0, 0.9, ratio=0.5, resolution=16)
    assert set(mutual.to_dict()) == {
        "index",
        "widths",
        "macs",
        "params",
        "latency_ms",
        "val_accuracy",
        "val_loss",
        "ratio",
        "resolution",
    }
    assert set(STEP1.to_dict()) - set(mutual.to_dict()) == {"removed", "channels"}


def test_unknown_keys_are_refused():
    data = RESULT.to_dict()
    data["budgets"][0]["accuracy"] = 95.5
    with pytest.raises(ValueError, match="budget answer: unknown field"):
        SearchResult.from_dict(data)
