"""Racing a greedy step's candidates: clear losers are dropped after a cheap first round.

Most of a step's candidates are far worse than the best one (removing a bin from a sensitive
layer costs points that a few hundred images show plainly), yet the exact search calibrates and
scores every one of them on the whole sample.  A race scores every candidate first on the head of
both samples (``fraction`` of the calibration and of the scoring images), then scores exactly
(whole samples, as the exact search does) only the candidates that might still beat that round's
leader.

A candidate is dropped when the leader is better on the same images beyond doubt: over the paired
per-image differences ``d = leader_right - candidate_right`` (each -1, 0 or 1), the lower
confidence bound ``mean(d) - z * std(d) / sqrt(n)`` is above zero.  Pairing removes what the two
share (the images both get right or wrong), so the bound is tight for similar candidates and a
candidate that differs from the leader on no image is never dropped.  Everything is a function of
the data and the weights, so a race is deterministic; when the exact search's choice survives the
first round, the race takes the same step.  Ranked by loss (``criterion="loss"``), the paired
per-image differences are of cross-entropy instead (``d = candidate_loss - leader_loss``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from engine.calibrate import Score
from engine.candidate_scoring import Scorer, make_scorer
from engine.data.batches import Batches
from engine.spec import CRITERIA
from models.supernet import Supernet

Widths = dict[str, int]
Ranked = list[tuple[str, Score]]


def leader_is_surely_better(leader: torch.Tensor, other: torch.Tensor, z: float) -> bool:
    """Whether per-image hits ``leader`` beat ``other`` beyond ``z`` standard errors of their paired mean."""
    n = len(leader)
    if n < 2:
        return False
    diff = leader.double() - other.double()
    return bool(diff.mean() - z * diff.std() / math.sqrt(n) > 0)


def ranked(scores: dict[str, Score], order: list[str], criterion: str = "accuracy") -> Ranked:
    """Best first by ``criterion`` (`engine.spec.CRITERIA`): accuracy, then loss (`Score.better_than`), or
    loss, then accuracy; an exact tie keeps ``order``'s earlier group."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    position = {group: i for i, group in enumerate(order)}
    if criterion == "loss":
        return sorted(scores.items(), key=lambda kv: (kv[1].loss, -kv[1].accuracy, position[kv[0]]))
    return sorted(scores.items(), key=lambda kv: (-kv[1].accuracy, kv[1].loss, position[kv[0]]))


def per_image_merit(score: Score, criterion: str) -> torch.Tensor:
    """What the paired test compares image by image: hits, or negated losses (higher is better either way)."""
    return score.correct if criterion == "accuracy" else -score.losses


class RacingScorer:
    """Ranks a step's candidates with a first round on part of the data, then exact scores for the rest."""

    def __init__(
        self,
        supernet: Supernet,
        calib: Batches,
        score: Batches,
        fraction: float,
        z: float,
        kind: str = "shared",
        shard: Callable[[Scorer], Scorer] = lambda scorer: scorer,
        criterion: str = "accuracy",
    ) -> None:
        """``shard`` wraps each round's scorer (`engine.distributed.shard_scorer` spreads it over ranks)."""
        if not 0 < fraction < 1:
            raise ValueError(f"race fraction must be between 0 and 1 (exclusive), got {fraction}")
        self.first = shard(make_scorer(kind, supernet, calib.head(fraction), score.head(fraction), per_image=True))
        self.exact = shard(make_scorer(kind, supernet, calib, score))
        self.z, self.criterion = z, criterion
        self.last_survivors = 0  # how many candidates the last race scored exactly (for benchmarks)

    def rank(self, parent: Widths, candidates: dict[str, Widths]) -> Ranked:
        """Survivors by their exact scores, then the dropped ones by their first-round scores."""
        order = list(candidates)
        first = ranked(self.first.score(parent, candidates), order, self.criterion)
        leader = per_image_merit(first[0][1], self.criterion)
        alive = [g for g, s in first if not leader_is_surely_better(leader, per_image_merit(s, self.criterion), self.z)]
        self.last_survivors = len(alive)
        exact = ranked(self.exact.score(parent, {g: candidates[g] for g in alive}), order, self.criterion)
        return exact + [(g, s) for g, s in first if g not in set(alive)]


def exact_rank(scorer: Scorer, parent: Widths, candidates: dict[str, Widths], criterion: str = "accuracy") -> Ranked:
    """Every candidate scored on the whole samples, best first by ``criterion`` (the exact greedy's ranking)."""
    return ranked(scorer.score(parent, candidates), list(candidates), criterion)
