"""BN post-statistics (US-Net) and evaluation on in-memory tensors.

Shared BN statistics collected during training mix every width and are wrong for any single
configuration; before a configuration is scored or exported, its BN statistics are reset and
re-estimated over a fixed sample of training images with exact cumulative averaging (momentum
``None``), the rest of the network in eval mode and no gradients.  Data are kept as tensors (on
the model's device) because the search calibrates and scores hundreds of candidates.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from engine.data.batches import Batches
from models.ops import SlimBatchNorm2d


def shared_bns(model: nn.Module) -> list[SlimBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, SlimBatchNorm2d)]


@contextmanager
def bn_calibration(bns: Sequence[_NormBase]) -> Iterator[None]:
    """Fresh statistics for ``bns`` by exact cumulative averaging, in a network already in eval mode.

    Only these BN layers switch to train mode (and back to eval after), so the search can call
    this per candidate without walking every module of the network.
    """
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.training = True
    try:
        yield
    finally:
        for bn, momentum in zip(bns, saved):
            bn.momentum = momentum
            bn.training = False


@torch.no_grad()
def calibrate_bn(model: nn.Module, data: Batches, bns: Sequence[_NormBase] | None = None) -> None:
    """Re-estimate the statistics of ``bns`` (default: every shared BN) at the model's current widths."""
    bns = shared_bns(model) if bns is None else list(bns)
    was_training = model.training
    model.eval()
    try:
        with bn_calibration(bns):
            for x, _ in data:
                model(x)
    finally:
        model.train(was_training)


@dataclass
class Score:
    accuracy: float  # percent
    loss: float  # mean cross-entropy
    correct: torch.Tensor | None = field(default=None, compare=False, repr=False)
    """Per scored image, 1.0 where the prediction was right (kept on request: racing compares
    candidates image by image, `engine.racing`)."""
    losses: torch.Tensor | None = field(default=None, compare=False, repr=False)
    """Per scored image, its cross-entropy (kept with ``correct``)."""

    def better_than(self, other: Score | None) -> bool:
        """Higher accuracy wins; lower loss breaks ties (AutoSlim keeps the removal that hurts least)."""
        return other is None or (self.accuracy, -self.loss) > (other.accuracy, -other.loss)


class ScoreSum:
    """Accumulates accuracy and cross-entropy batch by batch; with ``per_image``, also which images
    were right."""

    def __init__(self, per_image: bool = False) -> None:
        self.correct: float = 0
        self.loss, self.count = 0.0, 0
        self.hits: list[torch.Tensor] | None = [] if per_image else None
        self.losses: list[torch.Tensor] = []

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        logits = logits.float()
        hit = logits.argmax(1) == y
        losses = F.cross_entropy(logits, y, reduction="none")
        self.loss += losses.sum().item()
        self.correct += hit.sum().item()
        self.count += len(y)
        if self.hits is not None:
            self.hits.append(hit.float().cpu())
            self.losses.append(losses.cpu())

    def score(self) -> Score:
        hits = None if self.hits is None else torch.cat(self.hits)
        losses = None if self.hits is None else torch.cat(self.losses)
        return Score(100.0 * self.correct / self.count, self.loss / self.count, hits, losses)


@torch.no_grad()
def evaluate(model: nn.Module, data: Batches, per_image: bool = False) -> Score:
    was_training = model.training
    model.eval()
    total = ScoreSum(per_image)
    for x, y in data:
        total.add(model(x), y)
    model.train(was_training)
    return total.score()
