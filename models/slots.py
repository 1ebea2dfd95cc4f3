"""The channel algebra under the graph analysis: slots, ties, cuts, blocks and groups.

Every channel a weight layer produces is a *slot* (a global integer id); the network input's
channels are slots too, fixed.  A tensor's channel dimension is a *layout*: the slot each position
carries.  Concatenation joins layouts, a split or chunk slices one, a channel shuffle permutes one,
flatten repeats each slot over the spatial positions.  Three kinds of facts are collected while the
graph is walked (`models.graph`):

- a **tie** says two layouts must keep the same positions (a residual addition, a
  squeeze-excitation gate, the equal parts a chunk or a grouped conv cuts a tensor into);
- a **cut** says a block of channels starts at a slot (where a layout is sliced);
- a slot is **fixed** when its channel may never be removed (the image, the logits, a slice with
  a literal size in the user's code).

`SlotTable.solve` turns them into *blocks* (runs of one producer's slots between cuts, refined until
every tie joins whole blocks position by position) and *groups* (blocks joined by ties).  A group
has one width w: each of its blocks keeps its first w channels.  That rule is what makes a
physically slim model run the user's own forward code: each part of a chunk or grouped conv stays
the same size, a shuffle's parts stay aligned, an addition's operands match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Segment:
    """The slots one layer produces (or the image's): ids ``start .. start + length - 1``."""

    owner: str
    start: int
    length: int


class SlotTable:
    """Collects segments, ties, cuts and fixed slots while a graph is analysed."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self._ties: list[tuple[np.ndarray, np.ndarray]] = []
        self._cuts: list[np.ndarray] = []
        self._fixed: list[np.ndarray] = []
        self.size = 0

    def new_segment(self, owner: str, length: int, fixed: bool = False) -> np.ndarray:
        """Fresh slots for ``length`` channels produced by ``owner``; returns their layout."""
        segment = Segment(owner, self.size, length)
        self.segments.append(segment)
        self.size += length
        slots = np.arange(segment.start, segment.start + length, dtype=np.int64)
        if fixed:
            self.fix(slots)
        return slots

    def tie(self, a: np.ndarray, b: np.ndarray) -> None:
        """Positions ``a[i]`` and ``b[i]`` must stay or go together (same group, same index)."""
        if len(a) != len(b):
            raise ValueError(f"cannot tie layouts of {len(a)} and {len(b)} channels")
        self._ties.append((np.asarray(a, np.int64), np.asarray(b, np.int64)))

    def cut(self, layout: np.ndarray, position: int) -> None:
        """A block boundary between ``layout[position - 1]`` and ``layout[position]``."""
        if 0 < position < len(layout):
            self._cuts.append(np.array([layout[position], layout[position - 1] + 1], np.int64))

    def fix(self, slots: np.ndarray) -> None:
        self._fixed.append(np.asarray(slots, np.int64).ravel())

    def solve(self) -> Blocks:
        return Blocks(self)


@dataclass
class Group:
    """Blocks that share one width: counts are multiples of ``divisor`` in [``min``, ``max``].

    ``max`` is the length of each block; ``layers`` are the layers whose outputs hold its blocks.
    """

    name: str
    layers: list[str]
    max: int
    min: int
    divisor: int
    blocks: list[tuple[int, int]] = field(default_factory=list, repr=False)  # (first slot, length)

    def grid(self) -> list[int]:
        """Every legal width, widest first (the full width is always legal even if unaligned)."""
        widths = list(range(self.max // self.divisor * self.divisor, self.min - 1, -self.divisor))
        return sorted({self.max, *widths}, reverse=True)


class Blocks:
    """The solved table: per slot its block, its index in the block, and its block's class."""

    def __init__(self, table: SlotTable) -> None:
        self.table = table
        size = table.size
        starts = np.zeros(size + 1, bool)
        for seg in table.segments:
            starts[seg.start] = True
        starts[size] = True
        for cut in table._cuts:
            starts[cut] = True
        left = np.concatenate([a for a, _ in table._ties]) if table._ties else np.zeros(0, np.int64)
        right = np.concatenate([b for _, b in table._ties]) if table._ties else np.zeros(0, np.int64)
        starts = _refine(starts, left, right)
        self.block_start = np.maximum.accumulate(np.where(starts[:size], np.arange(size), 0))
        self.index = np.arange(size) - self.block_start
        self.root = _union_blocks(self.block_start, self.index, left, right)
        fixed_roots = set()
        for slots in table._fixed:
            fixed_roots.update(self.root[slots].tolist())
        self.fixed = np.isin(self.root, list(fixed_roots)) if fixed_roots else np.zeros(size, bool)

    def block_length(self, slot: int) -> int:
        start = self.block_start[slot]
        end = start + 1
        while end < self.table.size and self.block_start[end] == start:
            end += 1
        return int(end - start)


def _refine(starts: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Block starts closed under ties: a tied pair starts (or ends) a block together.

    ``starts[x]`` says slot x begins a block, so ``starts[x + 1]`` says slot x ends one.  Each
    pass copies both facts across every tie; chains of ties (a shuffle network's units) need a
    few passes.
    """
    while True:
        before = starts.copy()
        for a, b in ((left, right), (right, left)):
            starts[a] |= starts[b]
            starts[a + 1] |= starts[b + 1]
        if np.array_equal(before, starts):
            return starts


def _union_blocks(block_start: np.ndarray, index: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Per slot, the representative block start of its group (blocks joined by any tie)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    if len(left):
        if not np.array_equal(index[left], index[right]):
            bad = int(np.flatnonzero(index[left] != index[right])[0])
            raise ValueError(
                f"tied channels {int(left[bad])} and {int(right[bad])} sit at different places in their blocks"
            )
        pairs = np.unique(np.stack([block_start[left], block_start[right]], 1), axis=0)
        for a, b in pairs.tolist():
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)  # the earliest block names the group
    roots = {s: find(s) for s in np.unique(block_start).tolist()}
    return np.array([roots[s] for s in block_start.tolist()], np.int64) if len(block_start) else block_start
