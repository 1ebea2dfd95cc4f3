"""run_search end to end on the digits: budgets met, files that rebuild the answer, reuse, resume, cancel,
retraining, and the width x resolution search of a MutualNet supernet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import models
from engine import Cancelled, SearchSpec, run_search
from engine.budgets import Budget, BudgetError
from engine.calibrate import calibrate_bn
from engine.data import as_batches, load_data
from engine.mutual_search import best_under, width_ratios
from engine.spec import PHASES, CacheFolders
from engine.train import load_supernet

# The same recipe `autoslim search` builds from the flags in test_cli_search.py, so the supernet
# trained here (or there) serves both.
SPEC = {
    "arch": "resnet18",
    "dataset": "digits",
    "input_size": 16,
    "width_mult": 0.25,
    "train": {"epochs": 1, "batch_size": 16, "lr": 0.05},
    "search": {"bins": 4, "calib_size": 128, "score_size": 128},
}
FULL_MACS = 8_762_624  # resnet18 x0.25 at 16 px


@pytest.fixture(scope="module")
def caches(cache_root) -> CacheFolders:
    """Supernet and latency caches shared by every test module of the session."""
    return CacheFolders(cache_root / "supernets", cache_root / "latency")


@pytest.fixture(scope="module")
def first(caches, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("job") / "first"
    events: list[dict] = []
    result = run_search(
        {**SPEC, "macs": [6_500_000, 5_000_000], "params": [400_000]}, workdir, report=events.append, caches=caches
    )
    return workdir, result, events


def test_every_answer_fits_its_budget_and_its_config_rebuilds_it(first):
    workdir, result, _ = first
    assert [(b["kind"], b["target"]) for b in result["budgets"]] == [("macs", 6.5e6), ("macs", 5e6), ("params", 4e5)]
    trajectory = result["trajectory"]
    assert trajectory[0]["macs"] == result["full"]["macs"] == FULL_MACS
    assert all(a["macs"] > b["macs"] for a, b in zip(trajectory, trajectory[1:]))
    for answer in result["budgets"]:
        config = models.ChannelConfig.load(workdir / answer["files"]["config"])  # MACs recounted from channels
        assert config.channels == answer["channels"] and config.macs == answer["macs"]
        assert answer[answer["kind"]] <= answer["target"]
        step = trajectory[answer["step"]]  # the first step that fits, widened while it fits (the budget fill)
        assert all(answer["channels"][layer] >= count for layer, count in step["channels"].items())
        assert step[answer["kind"]] <= answer[answer["kind"]] <= answer["target"]
        assert all(s[answer["kind"]] > answer["target"] for s in trajectory[: answer["step"]])
        slim = models.build("resnet18", channels=config)
        assert sum(p.numel() for p in slim.parameters()) == config.params == answer["params"]
        assert (workdir / answer["files"]["pt"]).is_file() and (workdir / answer["files"]["onnx"]).is_file()
    assert json.loads((workdir / "result.json").read_text()) == json.loads(json.dumps(result))


def test_uniform_baseline_is_the_supernet_scored_like_the_greedy_candidates(first):
    _, result, _ = first
    supernet = load_supernet(Path(result["supernet"]["path"]))
    uniform, start = result["uniform"], result["trajectory"][0]
    assert [u["ratio"] for u in uniform] == [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25]
    for point in uniform:
        widths = supernet.space.uniform(point["ratio"])
        assert point["macs"] == models.count_macs(supernet.space, widths)
        assert point["params"] == models.count_params(supernet.space, widths)
    assert all(a["macs"] > b["macs"] for a, b in zip(uniform, uniform[1:]))
    # Full width is the greedy search's first step: same calibration, same scoring batches.
    assert uniform[0]["macs"] == start["macs"]
    assert uniform[0]["val_accuracy"] == pytest.approx(start["val_accuracy"])
    assert uniform[0]["val_loss"] == pytest.approx(start["val_loss"], rel=1e-5)


def test_exported_models_compute_the_calibrated_supernet(first):
    workdir, result, _ = first
    supernet = load_supernet(Path(result["supernet"]["path"]))
    data = load_data("digits", input_size=16)
    calib = as_batches(data.train_plain, 128, 200, seed=0)  # the search's calibration sample
    x = as_batches(data.test, 64).x
    for answer in result["budgets"]:
        config = models.ChannelConfig.load(workdir / answer["files"]["config"])
        supernet.set_widths(config.widths(supernet))
        calibrate_bn(supernet, calib)
        with torch.no_grad():
            expected = supernet.eval()(x)
            exported = torch.load(workdir / answer["files"]["pt"], weights_only=False)(x)
        assert torch.equal(exported, expected)
        session = onnxruntime.InferenceSession(str(workdir / answer["files"]["onnx"]))
        onnx_logits = session.run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(onnx_logits, expected.numpy(), atol=1e-4, rtol=1e-4)


def test_progress_moves_forward_through_the_phases(first):
    _, result, events = first
    phases = [e["phase"] for e in events]
    order = [PHASES.index(p) for p in phases]
    assert order == sorted(order) and phases[-1] == "done" and events[-1]["percent"] == 100.0
    percents = [e["percent"] for e in events]
    assert percents == sorted(percents) and 0.0 <= percents[0]
    steps = [e["trajectory_step"] for e in events if "trajectory_step" in e]
    assert steps == result["trajectory"]
    search = [e for e in events if "trajectory_step" in e]
    assert [e["steps_done"] for e in search] == [s["index"] for s in result["trajectory"]]
    etas = [e["eta_s"] for e in search]
    assert etas[0] is None and all(eta >= 0 for eta in etas[1:]) and etas[-1] == 0.0  # the last meets every budget


def test_a_second_search_reuses_the_supernet_and_a_finished_one_returns_at_once(first, caches, tmp_path):
    workdir, result, _ = first
    final = Path(result["supernet"]["path"])
    stamp = final.stat().st_mtime_ns
    events: list[dict] = []
    again = run_search({**SPEC, "macs": [7_500_000]}, tmp_path / "second", report=events.append, caches=caches)
    assert again["supernet"] == {**result["supernet"], "reused": True}
    assert "train" not in {e["phase"] for e in events} and final.stat().st_mtime_ns == stamp
    # The same supernet and samples: the same full network's score.  (Later steps may differ: how many
    # bins a step removes depends on how far the budgets are, `engine.greedy.GreedySlimmer.bins_this_step`.)
    assert again["trajectory"][0] == result["trajectory"][0]
    events.clear()
    assert run_search({**SPEC, "macs": [7_500_000]}, tmp_path / "second", report=events.append, caches=caches) == again
    assert events == []


def test_cancelled_search_keeps_its_state_and_resumes_to_the_same_answer(first, caches, tmp_path):
    spec = SearchSpec.from_dict({**SPEC, "macs": [5_500_000]})  # several steps, even with combined moves
    seen: list[dict] = []
    with pytest.raises(Cancelled):
        run_search(
            spec,
            tmp_path,
            report=seen.append,
            should_cancel=lambda: sum("trajectory_step" in e for e in seen) >= 3,
            caches=caches,
        )
    saved = json.loads((tmp_path / "search_state.json").read_text())["steps"]
    assert [s["index"] for s in saved] == [0, 1, 2] and not (tmp_path / "result.json").exists()
    resumed = run_search(spec, tmp_path, caches=caches)
    assert len(resumed["trajectory"]) > 3  # it went on from the saved steps, on the uninterrupted path
    assert resumed["trajectory"] == run_search(spec, tmp_path / "uninterrupted", caches=caches)["trajectory"]


def test_infeasible_budgets_are_rejected_before_training(caches, tmp_path):
    supernets = caches.supernets
    before = set(supernets.iterdir()) if supernets.exists() else set()
    untrained = {**SPEC, "train": {**SPEC["train"], "epochs": 3}}  # a recipe nobody has trained
    with pytest.raises(BudgetError, match=r"below the smallest configuration; feasible range is"):
        run_search({**untrained, "macs": [1_000]}, tmp_path / "a", caches=caches)
    with pytest.raises(BudgetError, match=r"above the full configuration"):
        run_search({**untrained, "params": [10_000_000]}, tmp_path / "b", caches=caches)
    with pytest.raises(BudgetError, match=r"ms is below the smallest configuration; feasible range is .* ms"):
        run_search({**untrained, "latency_ms": [1e-6]}, tmp_path / "c", caches=caches)
    assert (set(supernets.iterdir()) if supernets.exists() else set()) == before


def test_retraining_fine_tunes_each_answer_and_exports_the_retrained_model(first, caches, tmp_path):
    result = run_search({**SPEC, "macs": [7_500_000], "retrain": {"epochs": 1, "lr": 0.01}}, tmp_path, caches=caches)
    (answer,) = result["budgets"]
    assert 0.0 <= answer["test_accuracy"] <= 100.0 and result["timings"]["retrain_s"] > 0
    retrained = torch.load(tmp_path / "retrain" / "macs-7.5M" / "model.pt", weights_only=False)
    exported = torch.load(tmp_path / answer["files"]["pt"], weights_only=False)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(exported(x), retrained(x))
    config = json.loads((tmp_path / answer["files"]["config"]).read_text())
    assert config["accuracy"] == config["test_accuracy"] == answer["test_accuracy"]


# ---- MutualNet: width x resolution ----------------------------------------------------------------
MUTUAL = {
    "arch": "resnet18",
    "dataset": "digits",
    "input_size": 16,
    "width_mult": 0.25,
    "train": {"mode": "mutual", "epochs": 1, "batch_size": 64, "lr": 0.05, "resolutions": [16, 12]},
    "search": {"calib_size": 128, "score_size": 128},
}


@pytest.fixture(scope="module")
def mutual(caches, tmp_path_factory):
    """A MutualNet supernet (two resolutions) searched for two MACs budgets."""
    workdir = tmp_path_factory.mktemp("mutual")
    return workdir, run_search({**MUTUAL, "macs": [6_000_000, 2_500_000]}, workdir, caches=caches)


def test_mutual_grid_covers_every_width_and_resolution(mutual):
    _, result = mutual
    ratios = width_ratios(0.25)
    assert ratios[0] == 1.0 and ratios[-1] == 0.25 and len(ratios) == 16
    grid = {(p["ratio"], p["resolution"]): p for p in result["trajectory"]}
    assert set(grid) == {(r, s) for r in ratios for s in (16, 12)}
    for ratio in ratios:  # same widths, fewer pixels: fewer MACs, same parameters
        assert (
            grid[ratio, 12]["macs"] < grid[ratio, 16]["macs"] and grid[ratio, 12]["params"] == grid[ratio, 16]["params"]
        )
    assert result["full"]["macs"] == grid[1.0, 16]["macs"]


def test_mutual_budget_gets_the_most_accurate_point_that_fits(mutual):
    workdir, result = mutual
    points = result["trajectory"]
    for answer in result["budgets"]:
        fitting = [p for p in points if p["macs"] <= answer["target"]]
        assert answer["val_accuracy"] == max(p["val_accuracy"] for p in fitting)
        config = models.ChannelConfig.load(workdir / answer["files"]["config"])
        assert config.net.input_size == answer["resolution"] and config.macs == answer["macs"] <= answer["target"]
        slim = torch.load(workdir / answer["files"]["pt"], weights_only=False)
        size = answer["resolution"]
        assert slim(torch.zeros(2, 3, size, size)).shape == (2, 10)
    assert best_under([], Budget("macs", 1.0)) is None


def test_mutual_search_does_not_retrain(caches, tmp_path):
    with pytest.raises(ValueError, match="no retraining"):
        run_search({**MUTUAL, "macs": [5_000_000], "retrain": {"epochs": 1}}, tmp_path, caches=caches)
