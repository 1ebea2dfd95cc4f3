"""The peers of `bench.bench_peers`: each turns the user's trained network into a slim one under a MACs budget.

Every arm returns an `Answer`: a plain slim ``nn.Module`` holding weights inherited from the
user's network (autoslim: from its supernet), ready for the common fine-tuning recipe, with its
MACs and params by the one counter every arm is held to (Torch-Pruning's ``count_ops_and_params``,
`tp_cost`) and the wall time of the tool's own search.

Peers (install: ``pip install -e '.[bench]'``, see `bench.bench_peers`):

- width multiplier: the first ``round(c * ratio)`` channels of every layer, the widest ratio (steps
  of 0.01) under the budget.  Not on autoslim's grid of 8: there the 16-channel layers at full
  resolution (28% of the MACs) can only halve, and no ratio lands between 27% and 54% of the MACs;
- Torch-Pruning (Fang et al., "DepGraph", CVPR 2023): L1-norm importance with one ratio for every
  layer ("uniform") or one threshold over all layers ("global"), and first-order Taylor importance
  (global); the pruning ratio is bisected until the pruned network's MACs meet the budget;
- NVIDIA Model Optimizer FastNAS: a per-layer sensitivity map (BN re-calibrated, scored on the
  held-out split), then a bisected threshold for the budget.  One sensitivity pass per seed serves
  every budget (its checkpoint file).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.calibrate import evaluate
from engine.data.batches import Batches

FULL_INPUT = (1, 3, 32, 32)
ROUND_TO = 8
"""FastNAS's channel grid, as autoslim's divisor.  Torch-Pruning keeps its default (no rounding): with
``round_to=8`` its 16-channel layers can only halve, no uniform ratio reaches 25% of the MACs, and
MACs stop falling monotonically with the ratio (0.5 -> 25.6%, 0.6 -> 37%)."""


@dataclass
class Answer:
    model: nn.Module
    macs: int
    params: int
    search_s: float
    note: str = ""


def tp_cost(model: nn.Module, input_size: int = 32) -> tuple[int, int]:
    """(MACs, params) by Torch-Pruning's counter: the one counter every arm is held to."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model.eval(), torch.zeros(1, 3, input_size, input_size))
    return int(macs), int(params)


def bisect(make: Callable[[float], nn.Module], budget: float, steps: int = 14) -> tuple[nn.Module, float]:
    """The model ``make(ratio)`` with the smallest pruning ratio in [0, 0.7] whose MACs fit ``budget``.

    A ratio prunes that share of each layer's channels, so MACs fall about as (1 - ratio)^2: 0.7
    leaves about 9%.  Torch-Pruning misbehaves near 1 (with ``round_to`` it stops pruning at all)."""
    low, high = 0.0, 0.7
    best = make(high)
    if tp_cost(best)[0] > budget:
        raise ValueError(f"even a {high:.0%} pruning ratio leaves more than {budget:.0f} MACs")
    best_ratio = high
    for _ in range(steps):
        mid = (low + high) / 2
        model = make(mid)
        if tp_cost(model)[0] <= budget:
            best, best_ratio, high = model, mid, mid
        else:
            low = mid
    return best, best_ratio


def torch_pruning(
    user: nn.Module, budget: float, importance: str, global_pruning: bool, grads_from: Batches | None = None
) -> Answer:
    """Torch-Pruning at the pruning ratio (bisected) that brings the network's MACs under ``budget``.

    ``importance`` is ``"l1"`` or ``"taylor"``; Taylor needs gradients, taken on ``grads_from``.
    The classifier is never pruned (its outputs are the classes)."""
    import torch_pruning as tp

    def make(ratio: float) -> nn.Module:
        model = copy.deepcopy(user).eval()
        if importance == "taylor":
            model.zero_grad()
            for x, y in grads_from:
                F.cross_entropy(model(x), y).backward()
        scorer = tp.importance.MagnitudeImportance(p=1) if importance == "l1" else tp.importance.TaylorImportance()
        pruner = tp.pruner.MetaPruner(
            model,
            torch.zeros(FULL_INPUT),
            importance=scorer,
            pruning_ratio=ratio,
            global_pruning=global_pruning,
            ignored_layers=[model.fc],
        )
        pruner.step()
        model.zero_grad(set_to_none=True)
        return model

    started = time.monotonic()
    model, ratio = bisect(make, budget)
    macs, params = tp_cost(model)
    return Answer(model, macs, params, time.monotonic() - started, f"ratio {ratio:.3f}")


def width_multiplier(user_supernet, budget: float) -> Answer:
    """The first channels of every layer at the widest uniform ratio (on ``user_supernet``'s grid) whose MACs fit ``budget``."""
    from models import export_slim

    started = time.monotonic()
    space = user_supernet.space
    for step in range(100, 0, -1):
        widths = space.uniform(step / 100)
        model = export_slim(user_supernet, widths)
        macs, params = tp_cost(model)
        if macs <= budget:
            return Answer(model, macs, params, time.monotonic() - started, f"x{step / 100:.2f}")
    raise ValueError(f"no uniform width fits {budget:.0f} MACs")


def fastnas(user: nn.Module, budget: float, calib: Batches, val: Batches, checkpoint: Path) -> Answer:
    """Model Optimizer's FastNAS: sensitivity of every layer's widths (scored on ``val`` after BN
    calibration on ``calib``), then the largest sub-network under ``budget`` that its threshold
    finds.  ``checkpoint`` keeps the sensitivity map, so later budgets skip that pass.

    FastNAS counts with its own counter; an answer over the budget by Torch-Pruning's is searched
    again with the constraint lowered by the excess, until it fits."""
    import modelopt.torch.prune as mtp

    loader = [(x, y) for x, y in calib]
    score = lambda model: evaluate(model, val).accuracy  # noqa: E731
    started = time.monotonic()
    target = budget
    for _ in range(6):
        model, _ = mtp.prune(
            model=copy.deepcopy(user).eval(),
            mode=[("fastnas", FASTNAS_CONFIG)],
            constraints={"flops": 2 * target},  # modelopt counts FLOPs as 2 x MACs
            dummy_input=torch.zeros(FULL_INPUT),
            config={
                "data_loader": loader,
                "collect_func": lambda batch: batch[0],
                "score_func": score,
                "checkpoint": str(checkpoint),
                "max_iter_data_loader": len(loader),
            },
        )
        plain = _plain(model)
        macs, params = tp_cost(plain)
        if macs <= budget:
            return Answer(plain, macs, params, time.monotonic() - started, f"constraint {2 * target / 1e6:.2f}M FLOPs")
        target -= (macs - budget) + 0.002 * budget
    raise ValueError(f"FastNAS found nothing under {budget:.0f} MACs by Torch-Pruning's counter")


FASTNAS_CONFIG = {
    "nn.Conv2d": {"*": {"channel_divisor": ROUND_TO}},
    "nn.BatchNorm2d": {"*": {"feature_divisor": ROUND_TO}},
}
"""FastNAS's search space with channels on a grid of 8: its default of 32 leaves a 0.25x ResNet-18
(16-128 channels) almost nothing to search."""


def _plain(model: nn.Module) -> nn.Module:
    """A modelopt search result exported as a plain torch module (fixed channels, no dynamic layers)."""
    import modelopt.torch.opt as mto

    return mto.export(model) if hasattr(mto, "export") else model


def val_accuracy(model: nn.Module, val: Batches) -> float:
    return evaluate(model.eval(), val).accuracy
