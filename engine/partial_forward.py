"""Run a supernet's graph from any node onward, reusing activations computed up to that node.

Greedy slimming scores many candidates per step that differ from the parent configuration in one
channel group only.  Everything a candidate computes before that group's channels are *mixed* is
the parent's computation, or a channel prefix of it: slimmable layers keep the first k channels,
and convs, BN (batch or running statistics are per channel), activations, pooling and residual
additions all act on each channel separately.  So a candidate's activations at its **cut** - the
first node that mixes the changed group's channels (a dense conv or linear layer reading them, or
anything not known to be channel-wise) - are the parent's activations there, with the changed
group's tensors cut down to the new width.  This module traces the network once with torch.fx
(slimmable layers as leaves, as `models.space` does) and runs node ranges over caller-held
environments, so the search computes each step's shared prefix once.

An environment maps graph nodes to tensors: the values *live* at a position (computed before it and
still used at or after it).  Environments hold one batch each, because calibration batches must
stay exactly the batches a plain forward would see (BN normalises with per-batch statistics).
"""

from __future__ import annotations

import functools
import operator

import torch
from torch import fx, nn

from models.layout import Layout, take
from models.ops import SlimBatchNorm2d, SlimConv2d, SwitchableBatchNorm2d
from models.supernet import Supernet

Env = dict[fx.Node, torch.Tensor]


class PartialForward:
    """The traced node list of ``supernet.net`` with the bookkeeping to run any range of it."""

    def __init__(self, supernet: Supernet) -> None:
        self.supernet = supernet
        self.modules = dict(supernet.net.named_modules())
        analysis = supernet.space.graph
        self.nodes: list[fx.Node] = analysis.nodes
        self.layouts = analysis.layouts
        self._mixing = analysis.mixing
        self._grouped = {n for n in self.nodes if n.op == "call_module" and _grouped_conv(self.modules[n.target])}
        self.position = {node: i for i, node in enumerate(self.nodes)}
        self._last_use = {node: max((self.position[u] for u in node.users), default=-1) for node in self.nodes}
        # Per node, worked out once (a search runs each node thousands of times): whether it writes
        # its first input in place, and which values die with it.
        self._in_place = [_in_place(node, self.modules) for node in self.nodes]
        self._frees = [[u for u in node.all_input_nodes if self._last_use[u] == i] for i, node in enumerate(self.nodes)]
        self._cuts: dict[str, int] = {}
        self.end = len(self.nodes)

    # ---- structure --------------------------------------------------------------------------
    def groups_in(self, node: fx.Node) -> set[str]:
        """The channel groups a node's output carries (empty: fixed channels or no tensor)."""
        return {g for layout in layouts_of(self.layouts.get(node)) for g in layout.group_names}

    def cut(self, group: str) -> int:
        """Position of the first node that mixes ``group``'s channels: where a candidate changing
        only that group starts to differ from the parent by more than a selection of channels."""
        if group not in self._cuts:
            self._cuts[group] = next(i for i, node in enumerate(self.nodes) if self._mixes(node, group))
        return self._cuts[group]

    def _mixes(self, node: fx.Node, group: str) -> bool:
        """Convs, linear layers and unknown ops on fixed channels mix; channel-wise ops, ties,
        concatenations, chunks and shuffles only move channels (the analysis decides).

        A grouped conv that *writes* the group counts too: with fewer outputs per group its kernel
        blocks the arithmetic differently, so cutting its cached output down would differ from a
        recomputation in the last bits (a dense conv's outputs come out the same either way).
        """
        if node in self._grouped and group in self.groups_in(node):
            return True
        return node in self._mixing and any(group in self.groups_in(a) for a in node.all_input_nodes)

    def live_at(self, position: int) -> list[fx.Node]:
        """Nodes computed before ``position`` whose values are still needed at or after it."""
        return [n for n in self.nodes[:position] if self._last_use[n] >= position]

    def batchnorms(self, start: int, stop: int) -> list[nn.Module]:
        """BN layers run by nodes in [start, stop): the ones a range's calibration re-estimates."""
        found = []
        for node in self.nodes[start:stop]:
            module = self.modules.get(node.target) if node.op == "call_module" else None
            if isinstance(module, SlimBatchNorm2d):
                found.append(module)
            elif isinstance(module, SwitchableBatchNorm2d):
                found.extend(module.bn)
        return found

    def last_batchnorm(self) -> int:
        """Position just after the last BN node: calibration need not run further."""
        return 1 + max(
            i
            for i, n in enumerate(self.nodes)
            if n.op == "call_module" and isinstance(self.modules[n.target], (SlimBatchNorm2d, SwitchableBatchNorm2d))
        )

    # ---- execution --------------------------------------------------------------------------
    def start(self, x: torch.Tensor) -> Env:
        """The environment at position 0: the network input."""
        return {self.nodes[0]: x}

    def advance(self, env: Env, start: int, stop: int) -> Env:
        """Run nodes [start, stop) on ``env`` (live at ``start``); return the values live at ``stop``.

        ``env`` itself is never modified, so one cached environment serves many runs.
        """
        values = self._run(env, start, stop)
        return {node: values[node] for node in self.live_at(stop)}

    def finish(self, env: Env, start: int, stop: int | None = None) -> torch.Tensor | None:
        """Run from ``start`` to ``stop`` (default: the end) and return the network output, if reached."""
        stop = self.end if stop is None else stop
        values = self._run(env, start, stop)
        last = self.nodes[-1]
        return values.get(last) if stop == self.end else None

    def narrow(self, env: Env, parent: dict[str, int], child: dict[str, int]) -> Env:
        """``env`` (computed at ``parent`` widths) cut down to the channels ``child`` keeps."""
        changed = {g for g in child if child[g] != parent[g]}
        out = {}
        for node, value in env.items():
            layouts = self.layouts.get(node)
            if changed & self.groups_in(node):
                value = _narrowed(value, layouts, parent, child)
            out[node] = value
        return out

    def _run(self, env: Env, start: int, stop: int) -> Env:
        values = dict(env)
        borrowed = set(env)
        for i in range(start, stop):
            node = self.nodes[i]
            if node.op == "placeholder":
                continue  # the input: supplied by `start`
            if self._in_place[i] and node.args and node.args[0] in borrowed:
                # An in-place op must not overwrite a value the caller keeps for other candidates.
                values[node.args[0]] = values[node.args[0]].clone()
                borrowed.discard(node.args[0])
            values[node] = self._call(node, values)
            for used in self._frees[i]:
                del values[used]  # only this local reference: the caller's env is untouched
        return values

    def _call(self, node: fx.Node, values: Env):
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
        if node.op == "call_module":
            return self.modules[node.target](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "get_attr":
            return functools.reduce(getattr, str(node.target).split("."), self.supernet.net)
        if node.op == "output":
            return args[0]
        raise RuntimeError(f"cannot run graph node {node.name!r} ({node.op})")


def _grouped_conv(module: nn.Module) -> bool:
    return isinstance(module, SlimConv2d) and module.groups > 1 and not module.depthwise


def _in_place(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return bool(getattr(modules[node.target], "inplace", False))
    if node.op == "call_function":
        return node.target is operator.iadd or bool(node.kwargs.get("inplace", False))
    return node.op == "call_method" and str(node.target).endswith("_")


def layouts_of(value) -> list[Layout]:
    """The layouts of a node's value (several for a chunk's parts; none for a non-tensor)."""
    if isinstance(value, Layout):
        return [value]
    if isinstance(value, tuple):
        return [layout for v in value for layout in layouts_of(v)]
    return []


def _narrowed(value, layout, parent: dict[str, int], child: dict[str, int]):
    """One value (a tensor, or a tuple of them for a chunk's parts) cut to the child's channels."""
    if isinstance(layout, tuple):
        return tuple(_narrowed(v, lay, parent, child) for v, lay in zip(value, layout))
    if layout is None or not changed_in(layout, parent, child):
        return value
    # Keep the search's memory format; a tensor contiguous in both (1x1 spatial, an SE gate) stays in
    # the default one, as the full forward leaves it (another layout picks other kernels, other rounding).
    channels_last = (
        value.dim() == 4
        and value.is_contiguous(memory_format=torch.channels_last)
        and not value.is_contiguous()
        and value.shape[1] > 1
    )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return take(value, layout.keep_within(parent, child), 1).contiguous(memory_format=fmt)


def changed_in(layout: Layout, parent: dict[str, int], child: dict[str, int]) -> bool:
    return any(parent[g] != child[g] for g in layout.group_names)
