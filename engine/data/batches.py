"""`Batches`: a fixed sample of a dataset held as tensors, the form BN calibration, candidate
scoring and racing read data in (`engine.data.as_batches` draws one)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch


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

    def to(self, device: torch.device | str) -> Batches:
        return Batches(self.x.to(device), self.y.to(device), self.batch_size)

    def channels_last(self) -> Batches:
        """The images in channels-last layout (NHWC in memory), the layout CPU convolutions run fastest in."""
        return Batches(self.x.contiguous(memory_format=torch.channels_last), self.y, self.batch_size)

    def head(self, fraction: float) -> Batches:
        """The first ``fraction`` of the sample (at least one image), in batches of equal size no larger
        than this one's: a racing round's share.  The sample was drawn at random
        (`engine.data.as_batches`), so its head is a random sample too; equal batches weigh equally in
        BN calibration's average over batches."""
        count = min(len(self), max(1, math.ceil(fraction * len(self))))
        batches = math.ceil(count / self.batch_size)
        return Batches(self.x[:count], self.y[:count], math.ceil(count / batches))
