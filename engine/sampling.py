"""Which sub-networks one training step trains, for each training mode: Slimmable Networks (Yu et
al., ICLR 2019), US-Net (Yu & Huang, ICCV 2019), AutoSlim (Yu & Huang, 2019, arXiv:1903.11728) and
MutualNet (Yang et al., ECCV 2020).

The first member of every step is the full network: it learns from the labels and, with inplace
distillation, is the teacher of the others in the same step.
- ``snet``: every switch (Slimmable Networks), widest first.
- ``usnet``: sandwich rule with uniform widths: largest, smallest, n-2 random ratios in [min, 1].
- ``usnet-nonuniform``: sandwich rule where each channel group takes its own random width from its
  grid (the AutoSlim supernet).
- ``mutual``: MutualNet: the full network at the full resolution, the smallest and n-2 random
  uniform widths, each at a resolution drawn from the list.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.spec import TRAIN_MODES
from models import Supernet

SWITCHES = (0.25, 0.5, 0.75, 1.0)
RESOLUTION_FRACTIONS = (1.0, 7 / 8, 6 / 8, 5 / 8)
"""MutualNet's {224, 192, 160, 128} relative to the largest, applied to any input size."""


@dataclass(frozen=True)
class Member:
    widths: dict[str, int]
    resolution: int | None = None  # None: the batch as loaded (the full input size)


def snet_switches(width_min: float) -> tuple[float, ...]:
    """The S-Net width list, clipped at the lower width bound."""
    return tuple(sorted({max(r, width_min) for r in SWITCHES}))


def default_resolutions(input_size: int) -> list[int]:
    """Largest first, multiples of 4 (stride-friendly), never below 8 px."""
    return sorted({max(8, round(input_size * f / 4) * 4) for f in RESOLUTION_FRACTIONS}, reverse=True)


def check_mode(mode: str, supernet: Supernet) -> None:
    """S-Net needs switchable BN and the other modes shared BN; mixing them trains the wrong thing."""
    if mode not in TRAIN_MODES:
        raise ValueError(f"unknown training mode {mode!r}; choose from {', '.join(TRAIN_MODES)}")
    if (mode == "snet") != bool(supernet.spec.switches):
        need = "switchable BN (switches)" if mode == "snet" else "shared BN (no switches)"
        raise ValueError(f"mode {mode!r} needs a supernet with {need}; build it with engine.train.build_for_mode")


class WidthSampler:
    """Draws each step's members from its own generator (saved in checkpoints, so resuming repeats them)."""

    def __init__(
        self, supernet: Supernet, mode: str, num_sandwich: int = 4, resolutions: list[int] | None = None, seed: int = 0
    ) -> None:
        check_mode(mode, supernet)
        if num_sandwich < 2 and mode != "snet":
            raise ValueError(f"the sandwich rule needs at least 2 widths, got {num_sandwich}")
        self.space, self.mode, self.num_sandwich = supernet.space, mode, num_sandwich
        self.width_min = supernet.spec.width_min
        self.switches = sorted(supernet.spec.switches, reverse=True)
        self.input_size = supernet.spec.input_size
        self.resolutions = sorted(resolutions or default_resolutions(self.input_size), reverse=True)
        self.generator = torch.Generator().manual_seed(seed)

    def members(self) -> list[Member]:
        if self.mode == "snet":
            return [Member(self.space.uniform(r)) for r in self.switches]
        full, smallest = Member(self.space.full()), self.space.smallest()
        randoms = [self._random_widths() for _ in range(self.num_sandwich - 2)]
        if self.mode != "mutual":
            return [full, Member(smallest), *(Member(w) for w in randoms)]
        return [full, *(Member(w, self._random_resolution()) for w in [smallest, *randoms])]

    def _random_widths(self) -> dict[str, int]:
        if self.mode == "usnet-nonuniform":
            return self.space.random(self.generator)
        ratio = self.width_min + (1.0 - self.width_min) * float(torch.rand((), generator=self.generator))
        return self.space.uniform(ratio)

    def _random_resolution(self) -> int | None:
        size = self.resolutions[int(torch.randint(len(self.resolutions), (), generator=self.generator))]
        return None if size == self.input_size else size
