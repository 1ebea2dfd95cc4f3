"""BN post-statistics (US-Net) and evaluation on in-memory tensors.

Shared BN statistics collected during training mix every width and are wrong for any single
configuration; before a configuration is scored or exported, its BN statistics are reset and
re-estimated over a fixed sample of training images with exact cumulative averaging (momentum
``None``), the rest of the network in eval mode and no gradients.  Data are kept as tensors (on
the model's device) because the search calibrates and scores hundreds of candidates.
"""

from __future__ import annotations

from contextlib import contextmanager
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from models.ops import SlimBatchNorm2d


@dataclass
class Batches:
    """A dataset held as a few large tensors, iterated in fixed batches (no loader overhead)."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int = 200

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.y), self.batch_size):
            yield self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> "Batches":
        return Batches(self.x.to(device), self.y.to(device), self.batch_size)

    def channels_last(self) -> "Batches":
        """The images in channels-last layout (NHWC in memory), the layout CPU convolutions run fastest in."""
        return Batches(self.x.contiguous(memory_format=torch.channels_last), self.y, self.batch_size)

    def head(self, fraction: float) -> "Batches":
        """The first ``fraction`` of the sample (at least one image), in batches of equal size no larger
        than this one's: a racing round's share.  The sample was drawn at random
        (`engine.data.as_batches`), so its head is a random sample too; equal batches weigh equally in
        BN calibration's average over batches."""
        count = min(len(self), max(1, math.ceil(fraction * len(self))))
        batches = math.ceil(count / self.batch_size)
        return Batches(self.x[:count], self.y[:count], math.ceil(count / batches))


def shared_bns(model: nn.Module) -> list[SlimBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, SlimBatchNorm2d)]


@contextmanager
def bn_calibration(bns: list[nn.Module]) -> Iterator[None]:
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
def calibrate_bn(model: nn.Module, data: Batches, bns: list[nn.BatchNorm2d] | None = None) -> None:
    """Re-estimate the statistics of ``bns`` (default: every shared BN) at the model's current widths."""
    bns = shared_bns(model) if bns is None else bns
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

    def better_than(self, other: "Score | None") -> bool:
        """Higher accuracy wins; lower loss breaks ties (AutoSlim keeps the removal that hurts least)."""
        return other is None or (self.accuracy, -self.loss) > (other.accuracy, -other.loss)


class ScoreSum:
    """Accumulates accuracy and cross-entropy batch by batch; with ``per_image``, also which images
    were right."""

    def __init__(self, per_image: bool = False) -> None:
        self.correct, self.loss, self.count = 0, 0.0, 0
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
