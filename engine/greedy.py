"""AutoSlim greedy slimming: from the full width, remove the channel bin that hurts least, repeat.

Each group's channels are split into bins of about ``max / bins`` channels (a multiple of the
divisor).  A step tries removing the last bin of every group still above its minimum, scores each
candidate on held-out data with its own calibrated BN (`engine.candidate_scoring`), and keeps the
best (`Score.better_than`: accuracy, then cross-entropy; an exact tie keeps the earlier group, so
the result is deterministic).  Every step is recorded, so one pass answers every budget: a budget's
configuration is the first step that fits it.

The state is written after every step.  A resumed search continues from the last recorded step and
reaches the same trajectory, because a step depends only on its parent configuration (BN is
re-estimated from scratch for every candidate).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from engine.calibrate import Batches, Score, calibrate_bn, evaluate
from engine.candidate_scoring import make_scorer
from engine.distributed import Ranks, shard_scorer
from engine.spec import CancelFn, Cancelled
from models import count_macs, count_params
from models.space import ChannelSpace, Group
from models.supernet import Supernet

Widths = dict[str, int]
STATE_FORMAT = "autoslim.greedy-state/1"


@dataclass
class Step:
    """One point of the trajectory: a configuration and what it costs and scores."""

    index: int
    widths: Widths
    removed: str | None  # the group slimmed to reach it (None for the full network)
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
    def from_dict(cls, data: dict) -> "Step":
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


class GreedySlimmer:
    """One greedy search over a calibrated-per-candidate supernet.

    ``scorer`` is ``"shared"`` (prefix reuse, the default) or ``"full"`` (the straightforward
    reference); both give the same trajectory.  ``latency`` predicts a configuration's latency
    (`engine.latency.LatencyTable.predict`) for the record; None leaves it out.  With ``ranks``
    each rank scores its share of a step's candidates (`engine.distributed.ShardedScorer`); every
    rank then makes the same choice, and rank 0 alone writes the state.
    """

    def __init__(self, supernet: Supernet, calib: Batches, score: Batches, bins: int = 10, scorer: str = "shared",
                 latency: Callable[[Widths], float] | None = None, ranks: Ranks | None = None) -> None:
        if supernet.spec.switches:
            raise ValueError("greedy slimming needs a shared-BN supernet (US-Net modes); an S-Net runs only at its switches")
        self.supernet, self.calib, self.data = supernet, calib, score
        self.space = supernet.space
        self.bins = bins
        self.latency = latency
        self.scorer = shard_scorer(make_scorer(scorer, supernet, calib, score), ranks)
        self.writes = ranks is None or ranks.is_main

    def run(self, done: Callable[[list[Step]], bool] | None = None, state_path: Path | None = None,
            state_key: str = "", should_cancel: CancelFn | None = None,
            on_step: Callable[[Step], None] | None = None) -> list[Step]:
        """Slim until ``done(steps)`` holds or every group is at its minimum; returns all steps.

        With ``state_path`` the steps are saved after each one and a saved search with the same
        ``state_key`` is continued.  ``should_cancel`` is checked before every step; `Cancelled`
        leaves the saved state for a later resume.
        """
        steps = load_state(state_path, state_key) if state_path else []
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

    def step(self, parent: Step) -> Step | None:
        """The best one-bin removal from ``parent`` (None when nothing can be removed)."""
        options = candidates(self.space, parent.widths, self.bins)
        if not options:
            return None
        scores = self.scorer.score(parent.widths, options)
        best, best_score = None, None
        for group in options:  # space order: an exact tie keeps the earlier group
            if scores[group].better_than(best_score):
                best, best_score = group, scores[group]
        return self._record(parent.index + 1, options[best], best, best_score)

    def _score_one(self, widths: Widths) -> Score:
        self.supernet.set_widths(widths)
        calibrate_bn(self.supernet, self.calib)
        return evaluate(self.supernet, self.data)

    def _record(self, index: int, widths: Widths, removed: str | None, score: Score) -> Step:
        latency = None if self.latency is None else round(self.latency(widths), 6)
        return Step(index, dict(widths), removed, count_macs(self.space, widths), count_params(self.space, widths),
                    latency, score.accuracy, score.loss)

    @staticmethod
    def _save(steps: list[Step], path: Path | None, key: str, on_step: Callable[[Step], None] | None) -> None:
        if path is not None:
            save_state(path, key, steps)
        if on_step is not None:
            on_step(steps[-1])


def save_state(path: Path, key: str, steps: list[Step]) -> None:
    """Write the search state atomically (a crash mid-write leaves the previous state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"format": STATE_FORMAT, "key": key, "steps": [s.to_dict() for s in steps]}))
    os.replace(tmp, path)


def load_state(path: Path, key: str) -> list[Step]:
    """Saved steps of the search ``key`` (empty when there is none, or it belongs to another search)."""
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if data.get("format") != STATE_FORMAT or data.get("key") != key:
        return []
    return [Step.from_dict(s) for s in data["steps"]]
