"""The greedy search's speed-ups against the exact search: racing (and its bound) and combined moves."""

from __future__ import annotations

import pytest
import torch

from engine.budgets import Budget, first_fit, until_all_met
from engine.greedy import SPAN, Cost, GreedySlimmer, narrower
from engine.racing import RacingScorer, leader_is_surely_better
from models import count_macs

BINS = 4


def _budgets(net) -> list[Budget]:
    full = count_macs(net.space, net.space.full())
    return [Budget("macs", 0.8 * full), Budget("macs", 0.65 * full)]


@pytest.fixture(scope="module")
def exact(trained, samples):
    calib, score = samples
    return GreedySlimmer(trained, calib, score, bins=BINS).run(done=until_all_met(_budgets(trained)))


def test_the_bound_drops_a_candidate_only_when_the_leader_is_better_on_enough_images():
    leader = torch.ones(100)
    close = torch.ones(100)
    close[:3] = 0  # 3 images worse, none better: mean 0.03, std 0.171, bound 0.03 - 2 * 0.0171 < 0
    assert not leader_is_surely_better(leader, close, z=2.0)
    far = torch.ones(100)
    far[:10] = 0  # 10 worse: mean 0.1, std 0.3015, bound 0.1 - 0.0603 > 0
    assert leader_is_surely_better(leader, far, z=2.0)
    assert not leader_is_surely_better(leader, far, z=4.0)  # 0.1 - 0.1206 < 0
    swapped = torch.ones(100)
    swapped[:10], leader_swapped = 0, torch.ones(100)
    leader_swapped[10:20] = 0  # as many images the other way: no evidence at all
    assert not leader_is_surely_better(leader_swapped, swapped, z=0.5)
    assert not leader_is_surely_better(leader, leader.clone(), z=0.0)  # identical: never dropped
    assert not leader_is_surely_better(torch.ones(1), torch.zeros(1), z=0.1)  # one image is no evidence


def test_racing_takes_the_exact_steps_and_scores_fewer_candidates_exactly(trained, samples, exact):
    calib, score = samples
    slimmer = GreedySlimmer(trained, calib, score, bins=BINS, race_fraction=0.5, race_z=2.0)
    survivors, candidates = [], []
    rank = slimmer.racer.rank

    def counting(parent, options):
        out = rank(parent, options)
        survivors.append(slimmer.racer.last_survivors)
        candidates.append(len(options))
        return out

    slimmer.racer.rank = counting
    raced = slimmer.run(done=until_all_met(_budgets(trained)))
    assert [s.widths for s in raced] == [s.widths for s in exact]
    assert [(s.val_accuracy, s.val_loss) for s in raced] == [(s.val_accuracy, s.val_loss) for s in exact]
    assert sum(survivors) < sum(candidates)  # some candidates were dropped after the first round
    assert all(n >= 1 for n in survivors)


def test_the_first_round_sees_the_head_of_both_samples(trained, samples):
    calib, score = samples
    racer = RacingScorer(trained, calib, score, fraction=0.3, z=2.0)
    assert len(racer.first.calib) == len(racer.first.data) == 39  # 0.3 of 128 images, rounded up
    assert torch.equal(racer.first.data.x, score.x[:39])
    assert [len(y) for _, y in calib.head(0.8)] == [52, 51]  # 103 images in two equal batches (at most 64)


def test_combined_moves_take_fewer_steps_and_never_cross_a_budget(trained, samples, exact):
    calib, score = samples
    budgets = _budgets(trained)
    slimmer = GreedySlimmer(trained, calib, score, bins=BINS, budgets=budgets, bins_per_step=4)
    steps = slimmer.run(done=until_all_met(budgets))
    assert len(steps) < len(exact)
    sizes = []
    for parent, step in zip(steps, steps[1:]):
        groups = step.removed.split(",")
        sizes.append(len(groups))
        assert [g for g in step.widths if step.widths[g] != parent.widths[g]] == groups
        for g in groups:
            assert step.widths[g] == narrower(trained.space.groups[g], parent.widths[g], BINS)
        if len(groups) > 1:  # a combined move stops short of every budget its parent had not met
            assert not any(b.fits(step) and not b.fits(parent) for b in budgets)
            assert len(groups) <= slimmer.bins_this_step(parent)
    assert max(sizes) > 1 and sizes[-1] == 1  # several bins far away, a single one to meet the last budget
    for budget in budgets:
        assert budget.value(first_fit(steps, budget)) <= budget.target


def test_moves_shrink_as_the_next_budget_nears(trained, samples):
    calib, score = samples
    full = count_macs(trained.space, trained.space.full())
    slimmer = GreedySlimmer(trained, calib, score, bins=BINS, budgets=[Budget("macs", 0.5 * full)], bins_per_step=5)
    at = lambda share: slimmer.bins_this_step(Cost(int(share * full), 0, None))  # noqa: E731
    assert [at(1.0), at(0.5 + 2.5 * SPAN), at(0.5 + SPAN / 2), at(0.5)] == [5, 3, 1, 1]
    assert GreedySlimmer(trained, calib, score, bins=BINS).bins_this_step(Cost(full, 0, None)) == 1  # exact by default
