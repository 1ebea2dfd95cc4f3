"""Ranking a greedy step's candidates by held-out loss instead of accuracy, exact and raced."""

from __future__ import annotations

import pytest
import torch

from engine.calibrate import Score
from engine.candidate_scoring import make_scorer
from engine.greedy import GreedySlimmer, candidates
from engine.racing import per_image_merit, ranked

BINS = 4


def test_loss_picks_the_confident_candidate_that_accuracy_passes_over():
    # "a" gets one image more right, but is far less sure of the rest (higher cross-entropy).
    scores = {"a": Score(80.0, 0.90), "b": Score(79.0, 0.50), "c": Score(80.0, 0.95)}
    assert [g for g, _ in ranked(scores, ["a", "b", "c"])] == ["a", "c", "b"]
    assert [g for g, _ in ranked(scores, ["a", "b", "c"], "loss")] == ["b", "a", "c"]
    tied = {"a": Score(70.0, 0.5), "b": Score(75.0, 0.5)}  # equal loss: accuracy breaks the tie
    assert [g for g, _ in ranked(tied, ["a", "b"], "loss")] == ["b", "a"]
    with pytest.raises(ValueError, match="unknown criterion 'top5'"):
        ranked(scores, ["a", "b", "c"], "top5")


def test_per_image_merit_is_higher_for_the_better_image_under_either_criterion():
    score = Score(50.0, 1.0, torch.tensor([1.0, 0.0]), torch.tensor([0.2, 1.8]))
    assert per_image_merit(score, "accuracy").tolist() == [1.0, 0.0]
    assert per_image_merit(score, "loss").tolist() == pytest.approx([-0.2, -1.8])


def test_a_loss_step_takes_the_lowest_loss_candidate(trained, samples):
    calib, score = samples
    full = trained.space.full()
    options = candidates(trained.space, full, BINS)
    exact = make_scorer("full", trained, calib, score).score(full, options)
    by_loss = min(exact, key=lambda g: exact[g].loss)
    by_accuracy = max(exact, key=lambda g: (exact[g].accuracy, -exact[g].loss))
    root = GreedySlimmer(trained, calib, score, bins=BINS, criterion="loss").run(done=lambda s: len(s) > 0)[0]
    step = GreedySlimmer(trained, calib, score, bins=BINS, criterion="loss").step(root)
    assert step.removed == by_loss
    assert step.val_loss == pytest.approx(min(s.loss for s in exact.values()), abs=1e-5)
    plain = GreedySlimmer(trained, calib, score, bins=BINS).step(root)
    assert plain.removed == by_accuracy


def test_racing_by_loss_takes_the_exact_loss_steps(trained, samples):
    calib, score = samples
    done = lambda steps: len(steps) > 3  # noqa: E731
    exact = GreedySlimmer(trained, calib, score, bins=BINS, criterion="loss").run(done=done)
    raced = GreedySlimmer(trained, calib, score, bins=BINS, criterion="loss", race_fraction=0.5, race_z=2.0).run(
        done=done
    )
    assert [s.widths for s in raced] == [s.widths for s in exact]
    assert [s.val_loss for s in raced] == pytest.approx([s.val_loss for s in exact], abs=1e-6)
