"""Filling a budget: the greedy answer widened while it fits, never above the budget."""

from __future__ import annotations

import pytest

from engine.budget_fill import fill_budget, wider
from engine.budgets import Budget, first_fit
from engine.greedy import GreedySlimmer

BINS = 4


@pytest.fixture(scope="module")
def search(trained, samples):
    calib, score = samples
    slimmer = GreedySlimmer(trained, calib, score, bins=BINS)
    steps = slimmer.run(done=lambda steps: len(steps) > 4)
    return slimmer, steps


def test_fill_brings_the_answer_closer_to_its_budget_and_never_above_it(trained, samples, search):
    calib, score = samples
    slimmer, steps = search
    # A budget just under step 2: the greedy answer is step 3, a whole bin below step 2.
    budget = Budget("macs", steps[2].macs - 1)
    start = first_fit(steps, budget)
    assert start.index == 3
    filled = fill_budget(trained, calib, score, start, budget, slimmer.cost)
    assert start.macs < filled.macs <= budget.target
    assert filled.index == 3 and filled.removed.startswith("+")
    # Maximal: no group can grow by one more divisor and still fit.
    assert all(slimmer.cost(w).macs > budget.target for w in wider(trained.space, filled.widths).values())
    # Every group is at least as wide as in the greedy answer, and the score is the filled widths' own.
    assert all(filled.widths[g] >= start.widths[g] for g in start.widths)
    assert (filled.val_accuracy, filled.val_loss) == (
        slimmer._score_one(filled.widths).accuracy,
        slimmer._score_one(filled.widths).loss,
    )


def test_an_answer_with_no_room_is_kept_as_it_is(trained, samples, search):
    calib, score = samples
    slimmer, steps = search
    budget = Budget("macs", steps[3].macs)  # exactly at the step: any widening goes over
    start = first_fit(steps, budget)
    assert all(slimmer.cost(w).macs > budget.target for w in wider(trained.space, start.widths).values())
    assert fill_budget(trained, calib, score, start, budget, slimmer.cost) is start


def test_wider_grows_one_group_by_one_divisor_up_to_its_maximum(trained):
    space = trained.space
    full = space.full()
    assert wider(space, full) == {}
    narrow = space.smallest()
    options = wider(space, narrow)
    assert list(options) == list(space.groups)
    for name, widths in options.items():
        changed = {g for g in widths if widths[g] != narrow[g]}
        assert changed == {name}
        assert widths[name] == min(space.groups[name].max, narrow[name] + space.groups[name].divisor)
