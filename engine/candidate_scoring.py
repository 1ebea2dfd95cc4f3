"""Score one greedy step's candidates: BN calibrated per candidate, evaluated on held-out data.

Two scorers with one interface (``score(parent, candidates) -> {group: Score}``) give identical
results:

- `FullScorer` is the definition: per candidate, re-estimate every BN over the calibration sample
  and run the whole network over the scoring sample.
- `SharedPrefixScorer` does the same arithmetic without repeating it.  Candidates are visited in
  the order of their cut (`engine.partial_forward`); the parent's activations are carried forward
  from cut to cut once per step - calibrating the parent's BN layers in that range on the way, as
  a full calibration would - and each candidate runs only from its cut, re-estimating only the BN
  layers from there on.  BN statistics before the cut need no work: per-channel statistics of the
  parent's calibration are exactly the candidate's.
"""

from __future__ import annotations

import torch

from engine.calibrate import Score, ScoreSum, bn_calibration, calibrate_bn, evaluate
from engine.data.batches import Batches
from engine.partial_forward import Env, PartialForward
from models.supernet import Supernet

Widths = dict[str, int]


class FullScorer:
    """Straightforward scoring: full calibration and full forward per candidate."""

    def __init__(self, supernet: Supernet, calib: Batches, score: Batches, per_image: bool = False) -> None:
        self.supernet, self.calib, self.data, self.per_image = supernet, calib, score, per_image

    def score(self, parent: Widths, candidates: dict[str, Widths]) -> dict[str, Score]:
        scores = {}
        for group, widths in candidates.items():
            self.supernet.set_widths(widths)
            calibrate_bn(self.supernet, self.calib)
            scores[group] = evaluate(self.supernet, self.data, self.per_image)
        self.supernet.set_widths(parent)
        return scores


class SharedPrefixScorer:
    """Scoring that computes each step's shared prefix once (same numbers as `FullScorer`)."""

    def __init__(self, supernet: Supernet, calib: Batches, score: Batches, per_image: bool = False) -> None:
        self.supernet, self.calib, self.data, self.per_image = supernet, calib, score, per_image
        self.graph = PartialForward(supernet)
        self._calib_stop = self.graph.last_batchnorm()

    @torch.no_grad()
    def score(self, parent: Widths, candidates: dict[str, Widths]) -> dict[str, Score]:
        was_training = self.supernet.training
        self.supernet.eval()  # for the whole step; only BN layers switch to calibration and back
        try:
            return self._score(parent, candidates)
        finally:
            self.supernet.set_widths(parent)
            self.supernet.train(was_training)

    def _score(self, parent: Widths, candidates: dict[str, Widths]) -> dict[str, Score]:
        order = sorted(candidates, key=self.graph.cut)  # stable: equal cuts keep the group order
        calib_envs = [self.graph.start(x) for x, _ in self.calib]
        score_envs = [self.graph.start(x) for x, _ in self.data]
        position, scores = 0, {}
        for group in order:
            cut = self.graph.cut(group)
            if cut > position:
                self.supernet.set_widths(parent)
                calib_envs, score_envs = self._carry(calib_envs, score_envs, position, cut)
                position = cut
            self.supernet.set_widths(candidates[group])
            narrow = lambda env: self.graph.narrow(env, parent, candidates[group])  # noqa: E731, B023 - used at once
            self._calibrate_from(cut, [narrow(e) for e in calib_envs])
            scores[group] = self._evaluate_from(cut, [narrow(e) for e in score_envs])
        return {group: scores[group] for group in candidates}

    def _carry(
        self, calib_envs: list[Env], score_envs: list[Env], start: int, stop: int
    ) -> tuple[list[Env], list[Env]]:
        """Advance the parent's activations from ``start`` to ``stop``, calibrating its BN there."""
        with bn_calibration(self.graph.batchnorms(start, stop)):
            calib_envs = [self.graph.advance(env, start, stop) for env in calib_envs]
        score_envs = [self.graph.advance(env, start, stop) for env in score_envs]
        return calib_envs, score_envs

    def _calibrate_from(self, cut: int, envs: list[Env]) -> None:
        with bn_calibration(self.graph.batchnorms(cut, self.graph.end)):
            for env in envs:
                self.graph.finish(env, cut, max(cut, self._calib_stop))

    def _evaluate_from(self, cut: int, envs: list[Env]) -> Score:
        total = ScoreSum(self.per_image)
        for env, (_, y) in zip(envs, self.data):
            total.add(self.graph.finish(env, cut), y)
        return total.score()


Scorer = FullScorer | SharedPrefixScorer


def make_scorer(kind: str, supernet: Supernet, calib: Batches, score: Batches, per_image: bool = False) -> Scorer:
    """``"shared"`` (the search default) or ``"full"`` (the reference the benchmark compares against);
    ``per_image`` keeps which scored images each candidate got right (`Score.correct`)."""
    kinds = {"shared": SharedPrefixScorer, "full": FullScorer}
    if kind not in kinds:
        raise ValueError(f"unknown scorer {kind!r}; use one of {', '.join(kinds)}")
    return kinds[kind](supernet, calib, score, per_image)
