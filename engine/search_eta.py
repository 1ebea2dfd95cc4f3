"""The greedy search's ETA: the steps still to take, predicted from the move rule, times the seconds a step takes.

A plain "share of the MACs removed per second" extrapolation is wrong with combined moves
(`engine.greedy`, ``bins_per_step`` > 1): far from every budget a step removes up to that many bins,
near a budget one, so the MACs removed per second drop as the search nears each budget and such an
ETA promises too little (on the default digits search it said 4.5 minutes when 5.5 were left).

`SearchEta` instead replays the rule that sizes the moves (`GreedySlimmer.bins_this_step`) from
the last step to the last budget, which counts the steps left and the size of the network each one
runs on.  A bin removes about the same share of what is left (in every budget metric): a bin is a
tenth of a group's channels, and the MACs it takes with it scale with the widths of the layers
around it, which shrink with the network (on ResNet-18 a bin of the full network takes 2% of the
MACs, one at half the MACs 1%).  That share is measured on the steps so far.  A step's
time is taken as proportional to the share of the full network its parent runs (its candidates run
from their cut to the end of that network), and seconds per unit of that share come from the steps
timed in this process; a resumed search starts its clock where it resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.budgets import Budget
from engine.greedy import Cost, Step

MoveSize = Callable[[Cost], int]
"""Bins a move from a configuration of this cost removes (`GreedySlimmer.bins_this_step`)."""


class SearchEta:
    """Seconds left of a greedy search, updated after every step."""

    def __init__(
        self, budgets: list[Budget], full: Cost, move_size: MoveSize, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budgets, self.full, self.move_size, self.clock = budgets, full, move_size, clock
        self.previous: Step | None = None
        self.started: float | None = None
        self.work_done = 0.0  # network shares the steps timed in this process ran on
        self.removed: dict[str, float] = {}  # per metric (MACs and the budgets'): removed by the observed steps
        self.exposed: dict[str, float] = {}  # per metric: the observed steps' bins times their parent's value

    def update(self, step: Step) -> float | None:
        """Seconds left after ``step`` (None until a step has been timed; 0 once every budget is met)."""
        now = self.clock()
        if self.previous is not None and step.removed:
            self._observe(self.previous, step)
        if self.started is None:
            self.started, self.work_done = now, 0.0
        elif self.previous is not None:
            self.work_done += self._share(self.previous)
        self.previous = step
        if all(b.fits(step) for b in self.budgets):
            return 0.0
        if self.work_done <= 0 or not self.exposed:
            return None
        return (now - self.started) / self.work_done * self.work_left(step)

    def work_left(self, step: Step) -> float:
        """Network shares of the steps still to take from ``step``, by the move rule and the mean bin."""
        per_bin = {kind: self.removed[kind] / exposed for kind, exposed in self.exposed.items() if exposed > 0}
        at = {kind: getattr(step, kind) for kind in per_bin}
        work = 0.0
        while True:
            unmet = [b for b in self.budgets if b.kind in at and at[b.kind] > b.target]
            if not unmet or any(per_bin[b.kind] <= 0 for b in unmet):
                return work
            # a projected network: fractional counts, which the move rule compares like whole ones
            cost = Cost(at["macs"], at.get("params", 0.0), at.get("latency_ms"))
            work += self._share(cost)
            bins = self.move_size(cost)
            while bins > 1 and any(_after(at, per_bin, bins)[b.kind] <= b.target for b in unmet):
                bins -= 1  # a combined move never crosses a budget (`GreedySlimmer._combined_move`)
            at = _after(at, per_bin, bins)

    def _observe(self, parent: Step, step: Step) -> None:
        """What ``step``'s bins removed, in MACs and every budget metric, against what there was."""
        bins = len((step.removed or "").split(","))
        for kind in {"macs", *(b.kind for b in self.budgets)}:
            before, after = getattr(parent, kind), getattr(step, kind)
            if before is not None and after is not None:
                self.removed[kind] = self.removed.get(kind, 0.0) + before - after
                self.exposed[kind] = self.exposed.get(kind, 0.0) + bins * before

    def _share(self, cost: Cost | Step) -> float:
        """The share of the full network a configuration runs: its MACs over the full network's."""
        return cost.macs / self.full.macs


def _after(at: dict[str, float], per_bin: dict[str, float], bins: int) -> dict[str, float]:
    """Each metric after ``bins`` more bins, each removing its mean share of what is left."""
    return {kind: value * (1 - per_bin[kind]) ** bins for kind, value in at.items()}
