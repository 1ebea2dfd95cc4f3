"""Retraining a chosen configuration: starting points, determinism, scoring, cancel."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from engine.calibrate import calibrate_bn, evaluate
from engine.data import DataSplits, as_batches
from engine.retrain import initial_model, retrain
from engine.spec import Cancelled, TrainSpec
from models import ChannelConfig, build_supernet

RECIPE = TrainSpec(batch_size=32, label_smoothing=0.1)


@pytest.fixture(scope="module")
def tiny(digits16: DataSplits) -> DataSplits:
    keep = torch.arange(192)
    return replace(
        digits16,
        train=digits16.train.subset(keep, digits16.train.augment),
        train_plain=digits16.train_plain.subset(keep, None),
    )


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    return build_supernet("mobilenet_v1", 10, 16, 0.25).eval()


def _config(supernet) -> ChannelConfig:
    return ChannelConfig.from_widths(supernet, supernet.space.random(torch.Generator().manual_seed(3)))


def test_fine_tuning_starts_from_the_calibrated_supernet_and_scratch_from_seeded_weights(supernet, tiny):
    config, calib = _config(supernet), as_batches(tiny.train_plain, 64, 32)
    start = initial_model(config, supernet, calib)
    supernet.set_widths(config.widths(supernet))
    calibrate_bn(supernet, calib)
    x = calib.x[:8]
    with torch.no_grad():
        assert torch.equal(start(x), supernet(x))
    scratch_a, scratch_b = initial_model(config, None, None, seed=1), initial_model(config, None, None, seed=1)
    weights = lambda m: torch.cat([p.flatten() for p in m.parameters()])  # noqa: E731
    assert torch.equal(weights(scratch_a), weights(scratch_b))
    assert not torch.equal(weights(scratch_a), weights(initial_model(config, None, None, seed=2)))
    assert weights(scratch_a).shape == weights(start).shape and not torch.equal(weights(scratch_a), weights(start))


def test_retraining_is_deterministic_changes_the_weights_and_scores_on_the_test_split(supernet, tiny):
    config = _config(supernet)
    start = initial_model(config, supernet, as_batches(tiny.train_plain, 64, 32))
    runs = [retrain(copy.deepcopy(start), tiny, RECIPE, 1, 0.05, seed=4, device="cpu") for _ in range(2)]
    a, b = (dict(r.model.state_dict()) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a) and runs[0].test == runs[1].test
    assert any(not torch.equal(a[k], start.state_dict()[k]) for k in a)
    assert runs[0].test == evaluate(runs[0].model, as_batches(tiny.test, batch_size=200))
    assert not runs[0].model.training


def test_retraining_stops_when_cancelled(supernet, tiny):
    start = initial_model(_config(supernet), None, None)
    with pytest.raises(Cancelled):
        retrain(start, tiny, RECIPE, 2, 0.05, fine_tune=False, device="cpu", should_cancel=lambda: True)
    with pytest.raises(ValueError, match="at least one epoch"):
        retrain(start, tiny, RECIPE, 0, 0.05)
