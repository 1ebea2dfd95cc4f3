"""A solved channel layout: which group and which index each position of a tensor carries.

Evaluated at a configuration (group widths), a layout says how many channels the tensor has, and
which positions of the full tensor survive - the index sets a slimmable layer slices its weights
with, and the physically slim model keeps.  A position survives when its slot is fixed or its
index in its block is below its group's width (each block keeps its first channels).

Every layout is made of whole blocks (the analysis cuts blocks wherever a layout is sliced), so a
group contributes ``multiplicity * width`` positions: its count is a sum, never a scan.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from models.slots import Blocks, Group

Selection = slice | torch.Tensor
"""Positions to keep: a prefix as a slice (a view, no copy), anything else as an index tensor."""


@dataclass
class Layout:
    slots: np.ndarray  # global slot per position
    group_names: list[str]  # groups present, in first-seen order
    gid: np.ndarray  # per position, index into group_names; -1 for fixed
    index: np.ndarray  # per position, its index within its block
    multiplicity: dict[str, int]  # group -> positions per unit of its width
    fixed_count: int

    @classmethod
    def solved(
        cls, slots: np.ndarray, blocks: Blocks, group_of_root: dict[int, str], groups: dict[str, Group]
    ) -> Layout:
        fixed = blocks.fixed[slots] if len(slots) else np.zeros(0, bool)
        roots = blocks.root[slots]
        names = [group_of_root[r] for r in dict.fromkeys(roots[~fixed].tolist())]
        lookup = {group_of_root[r]: i for i, r in enumerate(dict.fromkeys(roots[~fixed].tolist()))}
        gid = np.array(
            [-1 if f else lookup[group_of_root[r]] for r, f in zip(roots.tolist(), fixed.tolist())], np.int64
        )
        multiplicity = {}
        for i, name in enumerate(names):
            present = int((gid == i).sum())
            multiplicity[name] = present // groups[name].max
        return cls(slots, names, gid, blocks.index[slots], multiplicity, int(fixed.sum()))

    def __len__(self) -> int:
        return len(self.slots)

    @functools.cached_property
    def single_group(self) -> str | None:
        """The group when this layout is exactly one block of one group (the common, prefix case)."""
        if self.fixed_count or len(self.group_names) != 1 or self.multiplicity[self.group_names[0]] != 1:
            return None
        return self.group_names[0] if np.array_equal(self.index, np.arange(len(self.index))) else None

    @property
    def fixed(self) -> bool:
        return not self.group_names

    def count(self, widths: dict[str, int]) -> int:
        """Channels at ``widths``."""
        return self.fixed_count + sum(m * widths[g] for g, m in self.multiplicity.items())

    def mask(self, widths: dict[str, int]) -> np.ndarray:
        """Per position of the full tensor: kept at ``widths``."""
        if not self.group_names:
            return np.ones(len(self.slots), bool)
        limit = np.array([widths[g] for g in self.group_names] + [np.iinfo(np.int64).max], np.int64)
        return self.index < limit[self.gid]

    def positions(self, widths: dict[str, int]) -> np.ndarray:
        return np.flatnonzero(self.mask(widths))

    def select(self, widths: dict[str, int]) -> Selection:
        """The kept positions, as a slice when they are a prefix."""
        group = self.single_group
        if group is not None:
            return slice(0, widths[group])
        count = self.count(widths)
        if count == len(self.slots):
            return slice(0, count)
        kept = self.positions(widths)
        if kept[-1] == len(kept) - 1:
            return slice(0, len(kept))
        return torch.as_tensor(kept)

    def keep_within(self, parent: dict[str, int], child: dict[str, int]) -> Selection:
        """Positions of the tensor at ``parent`` widths that remain at ``child`` widths (child <= parent)."""
        group = self.single_group
        if group is not None:
            return slice(0, child[group])
        kept = self.mask(child)[self.mask(parent)]
        index = np.flatnonzero(kept)
        if len(index) == 0 or index[-1] == len(index) - 1:
            return slice(0, len(index))
        return torch.as_tensor(index)


def take(tensor: torch.Tensor, selection: Selection, dim: int = 0) -> torch.Tensor:
    """``tensor`` restricted to ``selection`` along ``dim`` (a view for slices)."""
    if isinstance(selection, slice):
        return tensor.narrow(dim, 0, selection.stop) if selection.stop != tensor.shape[dim] else tensor
    return tensor.index_select(dim, selection.to(tensor.device))
