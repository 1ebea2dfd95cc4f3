"""Filling a budget: widen a greedy answer, one divisor at a time, while it still fits.

The greedy search removes a whole bin per step (about a tenth of a layer's channels, more in a
combined move), so the first step under a budget can land well below it: budget the user paid
for and does not get.  From that step, every group that can grow by one divisor and still fit the
budget is a candidate; each is BN-calibrated and scored like a greedy candidate, ranked by the
search's criterion (`engine.racing.ranked`), and the best one is kept.  That repeats until no
widening fits, so the answer ends within one divisor of some layer of its budget and never above it.

Candidates are wider than their parent, so the shared-prefix scorer (which narrows a parent's
activations) cannot serve them: each is scored whole (`engine.candidate_scoring.FullScorer`).
"""

from __future__ import annotations

from collections.abc import Callable

from engine.budgets import Budget
from engine.candidate_scoring import make_scorer
from engine.data.batches import Batches
from engine.greedy import Cost, Step, Widths
from engine.racing import exact_rank
from models.space import ChannelSpace
from models.supernet import Supernet


def wider(space: ChannelSpace, widths: Widths) -> dict[str, Widths]:
    """Every configuration one divisor wider than ``widths`` in one group (space order), up to each group's maximum."""
    out = {}
    for name, group in space.groups.items():
        if widths[name] < group.max:
            out[name] = {**widths, name: min(group.max, widths[name] + group.divisor)}
    return out


def fill_budget(
    supernet: Supernet,
    calib: Batches,
    score: Batches,
    start: Step,
    budget: Budget,
    cost: Callable[[Widths], Cost],
    criterion: str = "accuracy",
) -> Step:
    """``start`` widened while it fits ``budget`` (``start`` itself when nothing fits).

    The result keeps ``start``'s index (the trajectory step it grew from); its ``removed`` names the
    groups widened, each with a ``+``.
    """
    scorer = make_scorer("full", supernet, calib, score)
    current, grown = start, []
    while True:
        fitting = {g: w for g, w in wider(supernet.space, current.widths).items() if budget.fits(cost(w))}
        if not fitting:
            return current
        group, best = exact_rank(scorer, current.widths, fitting, criterion)[0]
        grown.append(f"+{group}")
        spent = cost(fitting[group])
        current = Step(
            start.index,
            fitting[group],
            ",".join(grown),
            spent.macs,
            spent.params,
            spent.latency_ms,
            best.accuracy,
            best.loss,
        )
