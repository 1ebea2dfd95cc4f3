"""Greedy slimming: budgets met, exact MACs, shared-prefix scoring equals the plain definition, resume, cancel."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.budgets import (
    Budget,
    BudgetError,
    budgets_of,
    check_budgets,
    feasible_range,
    first_fit,
    format_amount,
    parse_amount,
    parse_amounts,
    parse_targets,
    space_range,
    until_all_met,
)
from engine.candidate_scoring import FullScorer, SharedPrefixScorer
from engine.data import as_batches
from engine.greedy import GreedySlimmer, candidates, load_state, narrower
from engine.spec import Cancelled
from models import build_supernet, count_macs, count_params

BINS = 4


def _slimmer(net, samples, scorer="shared", **kw) -> GreedySlimmer:
    calib, score = samples
    return GreedySlimmer(net, calib, score, bins=BINS, scorer=scorer, **kw)


def _budgets(net) -> list[Budget]:
    full = net.space.full()
    return [
        Budget("macs", 0.75 * count_macs(net.space, full)),
        Budget("macs", 0.55 * count_macs(net.space, full)),
        Budget("params", 0.6 * count_params(net.space, full)),
    ]


@pytest.fixture(scope="module")
def reference(trained, samples):
    """An uninterrupted search to all of `_budgets`."""
    return _slimmer(trained, samples).run(done=until_all_met(_budgets(trained)))


def test_each_step_removes_one_bin_with_exact_costs_until_every_budget_is_met(trained, reference):
    budgets, steps = _budgets(trained), reference
    assert steps[0].widths == trained.space.full() and steps[0].removed is None
    for parent, step in zip(steps, steps[1:]):
        changed = [g for g in step.widths if step.widths[g] != parent.widths[g]]
        assert changed == [step.removed]
        assert step.widths[step.removed] == narrower(
            trained.space.groups[step.removed], parent.widths[step.removed], BINS
        )
        assert step.macs == count_macs(trained.space, step.widths) < parent.macs
        assert step.params == count_params(trained.space, step.widths)
    for budget in budgets:
        chosen = first_fit(steps, budget)
        assert chosen is not None and budget.value(chosen) <= budget.target
        assert all(budget.value(s) > budget.target for s in steps[: chosen.index])
    assert not until_all_met(budgets)(steps[:-1])  # it stopped at the first step meeting them all


@pytest.mark.parametrize("arch,width", [("mobilenet_v2", 0.35), ("resnet18", 0.25), ("mobilenet_v1", 0.25)])
def test_shared_prefix_scores_equal_the_full_recomputation(arch, width, digits16):
    """Every candidate's score, bit for bit, from a mid-search (nonuniform) parent.

    Untrained weights are enough: the equality is about arithmetic, and random BN statistics make
    every candidate's numbers distinct.
    """
    torch.manual_seed(0)
    net = build_supernet(arch, 10, 16, width).eval()
    calib, score = as_batches(digits16.train_plain, 96, 32), as_batches(digits16.val, 64, 32)
    parent = net.space.random(torch.Generator().manual_seed(1))
    options = candidates(net.space, parent, BINS)
    shared = SharedPrefixScorer(net, calib, score).score(parent, options)
    full = FullScorer(net, calib, score).score(parent, options)
    assert shared == full
    assert len({s.loss for s in full.values()}) > 1
    assert net.widths == parent
    net.to(memory_format=torch.channels_last)  # the layout a search runs in with `channels_last`
    calib, score = calib.channels_last(), score.channels_last()
    assert SharedPrefixScorer(net, calib, score).score(parent, options) == FullScorer(net, calib, score).score(
        parent, options
    )


def test_shared_and_full_search_give_the_same_trajectory(trained, samples):
    stop = lambda steps: len(steps) > 4  # noqa: E731
    shared = _slimmer(trained, samples, "shared").run(done=stop)
    full = _slimmer(trained, samples, "full").run(done=stop)
    assert shared == full
    assert len({s.removed for s in shared[1:]}) > 1


def test_resumed_search_reaches_the_same_result(trained, samples, reference, tmp_path: Path):
    state = tmp_path / "state.json"
    first = _slimmer(trained, samples).run(done=lambda s: len(s) >= 3, state_path=state, state_key="k")
    assert len(load_state(state, "k")) == 3 and load_state(state, "other") == []
    resumed = _slimmer(trained, samples).run(done=until_all_met(_budgets(trained)), state_path=state, state_key="k")
    assert resumed[:3] == first and resumed == reference


def test_cancel_raises_and_keeps_the_saved_steps(trained, samples, tmp_path: Path):
    state, calls = tmp_path / "state.json", []

    def cancel_on_third_check() -> bool:
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(Cancelled):
        _slimmer(trained, samples).run(state_path=state, state_key="k", should_cancel=cancel_on_third_check)
    assert [s.index for s in load_state(state, "k")] == [0, 1, 2]


def test_budgets_outside_the_space_are_rejected_with_the_range():
    reach = feasible_range("resnet18", 16, 10, width_mult=0.25)
    net = build_supernet("resnet18", 10, 16, 0.25)
    assert reach == space_range(net.space)
    assert reach["macs"]["min"] == count_macs(net.space, net.space.smallest()) < reach["macs"]["max"]
    check_budgets(budgets_of(macs=[reach["macs"]["min"], reach["macs"]["max"]]), reach)
    with pytest.raises(BudgetError, match=r"below the smallest configuration; feasible range is .* to .*MACs"):
        check_budgets(budgets_of(macs=[reach["macs"]["min"] - 1]), reach)
    with pytest.raises(BudgetError, match="above the full configuration"):
        check_budgets(budgets_of(params=[reach["params"]["max"] * 2]), reach)
    with pytest.raises(BudgetError, match="latency_ms"):
        check_budgets(budgets_of(latency_ms=[1.0]), reach)
    with pytest.raises(BudgetError, match="at least one budget"):
        budgets_of()


def test_amounts_parse_with_suffixes():
    assert parse_amounts("2M, 300k,1.5G,1500") == [2e6, 3e5, 1.5e9, 1500.0]
    assert parse_amount("0.5m") == 5e5 and format_amount(2_150_000) == "2.15M"
    with pytest.raises(BudgetError, match="2X"):
        parse_amount("2X")


def test_shares_of_the_full_network_resolve_against_its_figures():
    assert parse_targets("40%, 2M,12.5 %") == ["40%", 2e6, "12.5%"]
    full = {"macs": 8_000_000, "params": 300_000, "latency_ms": 2.0}
    budgets = budgets_of(macs=["40%", 1e6], latency_ms=["50%"], params=["100%"], full=full)
    assert [(b.kind, b.target) for b in budgets] == [
        ("macs", 3.2e6),
        ("macs", 1e6),
        ("latency_ms", 1.0),
        ("params", 3e5),
    ]
    for bad in ("0%", "150%", "-5%", "40%%", "x%"):
        with pytest.raises(BudgetError, match="share"):
            budgets_of(macs=[bad], full=full)
    with pytest.raises(BudgetError, match="full network's params"):
        budgets_of(params=["40%"])  # nothing to take 40% of
    reach = feasible_range("resnet18", 16, 10, width_mult=0.25)
    with pytest.raises(BudgetError, match="below the smallest"):
        check_budgets(budgets_of(macs=["1%"], full={"macs": reach["macs"]["max"]}), reach)
