"""AutoSlim greedy slimming: from the full width, remove the channel bin that hurts least, repeat.

Each group's channels are split into bins of about ``max / bins`` channels (a multiple of the
divisor).  A step tries removing the last bin of every group still above its minimum, scores each
candidate on held-out data with its own calibrated BN (`engine.candidate_scoring`), and keeps the
best (`Score.better_than`: accuracy, then cross-entropy; an exact tie keeps the earlier group, so
the result is deterministic).  Every step is recorded, so one pass answers every budget: a budget's
configuration is the first step that fits it.

Two settings trade exactness for time, each off by default here (the exact search is the
reference; `engine.spec.SearchSettings` says what a job uses):

- ``bins_per_step`` > 1: far from the next budget a step removes one bin from each of the k best
  candidates at once (k grows by one for every ``SPAN`` of the full network's cost between the
  parent and the nearest unmet budget, up to ``bins_per_step``), scored exactly as a whole.  A
  combined move never crosses a budget: near each budget the steps are single bins, as in the
  exact search, so answers stop no further below their budget.
- ``race_fraction`` > 0: candidates race (`engine.racing`): a first round on that share of the
  data drops the ones that cannot catch the leader, the rest are scored exactly.

With ``channels_last`` the search runs the supernet and its samples in channels-last memory layout
(NHWC): on CPU, convolutions and BN calibration run 1.5-2x faster so (`bench/bench_greedy_cost.py`
prints the ratio).  Scores may differ from the default layout's in the last bits; within one
layout, the shared-prefix and the straightforward scorer still agree exactly.

Candidates are scored through one seam, a scorer's ``score(parent, candidates) -> {group: Score}``
(`engine.candidate_scoring`): a scorer that spreads the candidates over processes plugs in there.

The state is written after every step.  A resumed search continues from the last recorded step and
reaches the same trajectory, because a step depends only on its parent configuration (BN is
re-estimated from scratch for every candidate).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from engine.atomic import write_json
from engine.budgets import Budget
from engine.calibrate import Score, calibrate_bn, evaluate
from engine.candidate_scoring import make_scorer
from engine.data.batches import Batches
from engine.distributed import Ranks, shard_scorer
from engine.racing import RacingScorer, Ranked, exact_rank
from engine.spec import CancelFn, Cancelled
from models import count_macs, count_params
from models.space import ChannelSpace, Group
from models.supernet import Supernet

Widths = dict[str, int]
STATE_FORMAT = "autoslim.greedy-state/1"
SPAN = 0.05
"""A combined move may remove one more bin for every 5% of the full network's cost (in the nearest
unmet budget's metric) that the parent lies above that budget."""


@dataclass
class Step:
    """One point of the trajectory: a configuration and what it costs and scores."""

    index: int
    widths: Widths
    removed: str | None  # the group(s) slimmed to reach it, comma-separated (None for the full network)
    macs: int
    params: int
    latency_ms: float | None
    val_accuracy: float
    val_loss: float

    def to_dict(self, space: ChannelSpace | None = None) -> dict:
        """Plain data; with ``space``, also the per-layer channels (the config-file form)."""
        out = asdict(self)
        if space is not None:
            out["channels"] = space.to_layers(self.widths)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Step:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def bin_size(group: Group, bins: int) -> int:
    """Channels one bin holds: about ``max / bins``, a multiple of the divisor, at least one divisor."""
    return max(group.divisor, round(group.max / bins / group.divisor) * group.divisor)


def narrower(group: Group, width: int, bins: int) -> int | None:
    """``width`` less one bin, on the group's grid and not below its minimum (None at the minimum)."""
    if width <= group.min:
        return None
    target = (width - bin_size(group, bins)) // group.divisor * group.divisor
    return max(group.min, target)


def candidates(space: ChannelSpace, widths: Widths, bins: int) -> dict[str, Widths]:
    """Every configuration one bin narrower than ``widths``, keyed by the slimmed group (space order)."""
    out = {}
    for name, group in space.groups.items():
        width = narrower(group, widths[name], bins)
        if width is not None:
            out[name] = {**widths, name: width}
    return out


@dataclass
class Cost:
    """What a configuration costs, in every budget metric (`engine.budgets.Measured`)."""

    macs: int
    params: int
    latency_ms: float | None


class GreedySlimmer:
    """One greedy search over a calibrated-per-candidate supernet.

    ``scorer`` is ``"shared"`` (prefix reuse, the default) or ``"full"`` (the straightforward
    reference); both give the same trajectory.  ``latency`` predicts a configuration's latency
    (`engine.latency.LatencyTable.predict`) for the record; None leaves it out.  ``budgets`` tell
    combined moves (``bins_per_step`` > 1) how far away the next budget is; ``race_fraction`` and
    ``race_z`` turn racing on (see the module docstring); ``criterion`` ranks candidates by held-out
    accuracy or loss (`engine.racing.ranked`).  With ``ranks`` each rank scores its share
    of a step's candidates (`engine.distributed.ShardedScorer`); every rank then makes the same
    choice, and rank 0 alone writes the state.
    """

    def __init__(
        self,
        supernet: Supernet,
        calib: Batches,
        score: Batches,
        bins: int = 10,
        scorer: str = "shared",
        latency: Callable[[Widths], float] | None = None,
        budgets: list[Budget] | tuple = (),
        bins_per_step: int = 1,
        race_fraction: float = 0.0,
        race_z: float = 2.0,
        channels_last: bool = False,
        ranks: Ranks | None = None,
        criterion: str = "accuracy",
    ) -> None:
        if supernet.spec.switches:
            raise ValueError(
                "greedy slimming needs a shared-BN supernet (US-Net modes); an S-Net runs only at its switches"
            )
        if bins_per_step < 1:
            raise ValueError(f"bins_per_step must be at least 1, got {bins_per_step}")
        if channels_last:
            calib, score = calib.channels_last(), score.channels_last()
        self.supernet, self.calib, self.data, self.channels_last = supernet, calib, score, channels_last
        self.space = supernet.space
        self.bins = bins
        self.latency = latency
        self.budgets, self.bins_per_step = list(budgets), bins_per_step
        shard = lambda inner: shard_scorer(inner, ranks)  # noqa: E731
        self.scorer = shard(make_scorer(scorer, supernet, calib, score))
        self.criterion = criterion
        self.racer = (
            RacingScorer(supernet, calib, score, race_fraction, race_z, scorer, shard, criterion)
            if race_fraction > 0
            else None
        )
        self.writes = ranks is None or ranks.is_main
        self.full_cost = self.cost(self.space.full())

    def run(
        self,
        done: Callable[[list[Step]], bool] | None = None,
        state_path: Path | None = None,
        state_key: str = "",
        should_cancel: CancelFn | None = None,
        on_step: Callable[[Step], None] | None = None,
    ) -> list[Step]:
        """Slim until ``done(steps)`` holds or every group is at its minimum; returns all steps.

        With ``state_path`` the steps are saved after each one and a saved search with the same
        ``state_key`` is continued.  ``should_cancel`` is checked before every step; `Cancelled`
        leaves the saved state for a later resume.
        """
        steps = load_state(state_path, state_key) if state_path else []
        with self._layout():
            if not steps:
                steps = [self._record(0, self.space.full(), None, self._score_one(self.space.full()))]
                self._save(steps, state_path if self.writes else None, state_key, on_step)
            while not (done and done(steps)):
                if should_cancel and should_cancel():
                    raise Cancelled(f"search cancelled after step {steps[-1].index}")
                step = self.step(steps[-1])
                if step is None:
                    break
                steps.append(step)
                self._save(steps, state_path if self.writes else None, state_key, on_step)
        return steps

    @contextmanager
    def _layout(self) -> Iterator[None]:
        """The supernet in the search's memory layout while it runs, handed back in the default one."""
        if not self.channels_last:
            yield
            return
        self.supernet.to(memory_format=torch.channels_last)
        try:
            yield
        finally:
            self.supernet.to(memory_format=torch.contiguous_format)

    def step(self, parent: Step) -> Step | None:
        """The best move from ``parent``: one bin, or near no budget several (None when nothing can be removed)."""
        options = candidates(self.space, parent.widths, self.bins)
        if not options:
            return None
        ranking = self.rank(parent.widths, options)
        groups, widths = self._combined_move(parent, options, ranking)
        if len(groups) == 1:
            return self._record(parent.index + 1, widths, groups[0], ranking[0][1])
        return self._record(parent.index + 1, widths, ",".join(groups), self._score_one(widths))

    def rank(self, parent: Widths, options: dict[str, Widths]) -> Ranked:
        """The candidates best first: raced when racing is on, else all scored exactly."""
        if self.racer is not None:
            return self.racer.rank(parent, options)
        return exact_rank(self.scorer, parent, options, self.criterion)

    def bins_this_step(self, parent: Cost) -> int:
        """How many bins a move from ``parent`` may remove: more the further the nearest unmet budget."""
        unmet = [b for b in self.budgets if not b.fits(parent)]
        gaps = [(b.value(parent) - b.target) / b.value(self.full_cost) for b in unmet if b.value(parent) is not None]
        if self.bins_per_step == 1 or not gaps:
            return 1
        return max(1, min(self.bins_per_step, 1 + int(min(gaps) / SPAN)))

    def _combined_move(self, parent: Step, options: dict[str, Widths], ranking: Ranked) -> tuple[list[str], Widths]:
        """The best ``k`` groups slimmed together, ``k`` lowered until the move crosses no unmet budget."""
        unmet = [b for b in self.budgets if not b.fits(parent)]
        for k in range(min(self.bins_this_step(parent), len(ranking)), 1, -1):
            groups = [group for group, _ in ranking[:k]]
            widths = {**parent.widths, **{g: options[g][g] for g in groups}}
            cost = self.cost(widths)
            if not any(b.fits(cost) for b in unmet):
                return [g for g in options if g in groups], widths  # space order, for a readable record
        best = ranking[0][0]
        return [best], options[best]

    def cost(self, widths: Widths) -> Cost:
        latency = None if self.latency is None else round(self.latency(widths), 6)
        return Cost(count_macs(self.space, widths), count_params(self.space, widths), latency)

    def _score_one(self, widths: Widths) -> Score:
        self.supernet.set_widths(widths)
        calibrate_bn(self.supernet, self.calib)
        return evaluate(self.supernet, self.data)

    def _record(self, index: int, widths: Widths, removed: str | None, score: Score) -> Step:
        cost = self.cost(widths)
        return Step(index, dict(widths), removed, cost.macs, cost.params, cost.latency_ms, score.accuracy, score.loss)

    @staticmethod
    def _save(steps: list[Step], path: Path | None, key: str, on_step: Callable[[Step], None] | None) -> None:
        if path is not None:
            save_state(path, key, steps)
        if on_step is not None:
            on_step(steps[-1])


def save_state(path: Path, key: str, steps: list[Step]) -> None:
    """Write the search state atomically (a crash mid-write leaves the previous state)."""
    write_json(path, {"format": STATE_FORMAT, "key": key, "steps": [s.to_dict() for s in steps]})


def load_state(path: Path, key: str) -> list[Step]:
    """Saved steps of the search ``key`` (empty when there is none, or it belongs to another search)."""
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if data.get("format") != STATE_FORMAT or data.get("key") != key:
        return []
    return [Step.from_dict(s) for s in data["steps"]]
