"""The one channel analysis of a network, read by every consumer (space, counting, export, the
supernet's slicing, the search's partial forward, latency).

The network is traced with torch.fx (conv, BN and linear layers as leaves), its shapes propagated
with one forward of a blank image, and every node's channel *layout* worked out
(`models.slots`): which produced channel each position of its output carries.  The rules for each
kind of op live in `models.channel_ops`; an op they cannot model, reading channels that could be
removed, is an error that names the op, the module path and what to do - never a guess.

What comes out (`ChannelGraph`): the weight layers with the layouts they read and write, the
channel groups (each with one searchable width), and per graph node its layout and whether it
mixes channels (where a partial forward must recompute).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.shape_prop import ShapeProp

from models.channel_ops import OpContext, Unmodelled, handler_for
from models.layout import Layout
from models.ops import SLIM_LEAVES, make_divisible
from models.slots import Blocks, Group, SlotTable

IMAGE = "@image"
"""Owner of the network input's slots (fixed channels)."""


@dataclass
class Layer:
    """One conv, BN or linear layer: the layouts it reads and writes and its fixed geometry."""

    name: str
    kind: str  # "conv" | "bn" | "linear"
    inputs: Layout
    outputs: Layout
    in_full: int = 0
    out_full: int = 0
    kernel: tuple[int, int] = (1, 1)
    groups: int = 1
    depthwise: bool = False
    bias: bool = False
    out_hw: tuple[int, int] = (1, 1)

    @property
    def group(self) -> str | None:
        """The group of this layer's output when it holds exactly one (None: fixed or mixed)."""
        return self.outputs.single_group

    @property
    def source(self) -> str | None:
        """The group of this layer's input when it holds exactly one (None: fixed or mixed)."""
        return self.inputs.single_group


@dataclass
class ChannelGraph:
    """The analysed network: layers, groups, and per traced node its layout and mixing flag."""

    layers: dict[str, Layer]
    groups: dict[str, Group]
    nodes: list[fx.Node]
    layouts: dict[fx.Node, Any]  # Layout, tuple of Layouts, or None (not a tensor)
    mixing: set[fx.Node] = field(default_factory=set)
    input_size: int = 32
    in_channels: int = 3


class ChannelTracer(fx.Tracer):
    """fx tracer with weight layers as leaves and known channel shuffles kept whole."""

    def __init__(self) -> None:
        super().__init__(autowrap_functions=_shuffle_functions())

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAF_TYPES) or super().is_leaf_module(m, qualname)


def trace(net: nn.Module) -> fx.Graph:
    """The inference graph: traced in eval mode, because functional calls bake in the training flag
    (torchvision's ``stochastic_depth(x, p, mode, self.training)``) and the graph is what scoring,
    calibration and export run - always in eval mode."""
    was_training = net.training
    net.eval()
    try:
        return ChannelTracer().trace(net)
    except fx.proxy.TraceError as err:
        raise NotImplementedError(
            f"torch.fx cannot trace {type(net).__name__} ({err}); autoslim analyses a network's graph, so its "
            "forward must not branch on tensor values"
        ) from None
    finally:
        net.train(was_training)


def analyse(
    net: nn.Module,
    input_size: int,
    divisor: int = 8,
    width_min: float = 0.25,
    in_channels: int = 3,
    keep: tuple[str, ...] = (),
) -> ChannelGraph:
    """Trace ``net`` and derive its channel groups (bounds: ``width_min`` of each, rounded to ``divisor``).

    ``keep`` names modules (dotted paths) whose channels are never removed: everything they read
    and write stays whole, so any op inside them is fine.
    """
    graph = trace(net)
    module = fx.GraphModule(net, graph)
    _propagate_shapes(module, net, input_size, in_channels)
    table = SlotTable()
    context = OpContext(table, dict(net.named_modules()), tuple(keep))
    for node in graph.nodes:
        try:
            context.values[node] = handler_for(node, context)(node, context)
        except Unmodelled as err:
            raise NotImplementedError(_explain(node, str(err))) from None
    blocks = table.solve()
    return _assemble(context, blocks, list(graph.nodes), input_size, in_channels, divisor, width_min)


FAKE_ABOVE_PX = 224
"""Above this input size shapes propagate on fake tensors, which carry shapes but do no arithmetic:
a real forward of MobileNetV2 x4 at 1024 px costs tens of seconds (the API checks budgets at
submission), a fake one about two.  Below it a real forward is cheaper than fake tensors' overhead."""


def _propagate_shapes(module: fx.GraphModule, net: nn.Module, input_size: int, in_channels: int) -> None:
    was_training = net.training
    module.eval()
    first = next(iter(net.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    fake = FakeTensorMode(allow_non_fake_inputs=True) if input_size > FAKE_ABOVE_PX else contextlib.nullcontext()
    try:
        with torch.no_grad(), fake:
            ShapeProp(module).propagate(torch.zeros(1, in_channels, input_size, input_size, device=device))
    finally:
        net.train(was_training)


def _assemble(
    context: OpContext,
    blocks: Blocks,
    nodes: list[fx.Node],
    input_size: int,
    in_channels: int,
    divisor: int,
    width_min: float,
) -> ChannelGraph:
    groups = _groups(context, blocks, divisor, width_min)
    group_of_root = {g.blocks[0][0]: name for name, g in groups.items()}
    resolve = lambda raw: Layout.solved(raw, blocks, group_of_root, groups)  # noqa: E731
    layouts = {node: _map_layout(value, resolve) for node, value in context.values.items()}
    layers = {}
    for name, record in context.layers.items():
        layers[name] = Layer(name, record.kind, resolve(record.inputs), resolve(record.outputs), **record.geometry)
    return ChannelGraph(layers, groups, nodes, layouts, context.mixing, input_size, in_channels)


def _groups(context: OpContext, blocks: Blocks, divisor: int, width_min: float) -> dict[str, Group]:
    """One group per class of tied blocks that is not fixed.

    Its layers are the conv and linear layers whose outputs hold its channels (a depthwise conv's
    output is its input), in trace order; the first names the group.  A layer may hold several
    blocks of a group (the parts of a grouped conv or a chunk), so the group's own divisor is what
    keeps those layers' channel counts multiples of ``divisor``: ResNeXt's 32 blocks of 4 channels
    step by one channel per block, 32 channels per layer.
    """
    members: dict[int, list[str]] = {}
    fewest: dict[int, int] = {}
    for name, record in context.layers.items():
        if record.kind == "bn":
            continue
        roots = blocks.root[record.outputs][~blocks.fixed[record.outputs]]
        for root, positions in zip(*np.unique(roots, return_counts=True)):
            root = int(root)
            members.setdefault(root, []).append(name)
            fewest[root] = min(fewest.get(root, positions), int(positions))
    starts = {}
    for start in np.unique(blocks.block_start).tolist():
        starts.setdefault(int(blocks.root[start]), []).append((start, blocks.block_length(start)))
    groups: dict[str, Group] = {}
    for root in sorted(members, key=lambda r: context_order(members[r][0], context)):
        layers, length = members[root], starts[root][0][1]
        step = divisor // math.gcd(divisor, fewest[root] // length)
        minimum = min(length, make_divisible(length * width_min, step))
        name = _unique(layers[0], groups)
        groups[name] = Group(name, layers, length, minimum, step, starts[root])
    return groups


def context_order(layer: str, context: OpContext) -> int:
    return list(context.layers).index(layer)


def _unique(name: str, taken: dict[str, Group]) -> str:
    """A layer whose output holds several groups names the second ``layer#1`` and so on."""
    count = sum(1 for existing in taken if existing == name or existing.startswith(name + "#"))
    return name if count == 0 else f"{name}#{count}"


def _map_layout(value: Any, resolve) -> Any:
    if isinstance(value, np.ndarray):
        return resolve(value)
    if isinstance(value, tuple):
        return tuple(_map_layout(v, resolve) for v in value)
    return None


def _explain(node: fx.Node, why: str) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    where = next(reversed(stack), "") if stack else ""
    where = f" in module {where!r}" if where else ""
    return (
        f"autoslim cannot model graph node {node.name!r} ({_describe(node)}){where}: {why}. "
        "Rewrite that part with ops autoslim models (conv/BN/linear layers, activations, pooling, "
        "add/mul, cat, chunk, torch.nn.functional.channel_shuffle), or keep its channels whole with "
        "models.convert(..., keep=[module path])"
    )


def _describe(node: fx.Node) -> str:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {target}"


def _shuffle_functions() -> tuple:
    """Channel-shuffle helpers of libraries, traced as one op (their view/transpose is a permutation)."""
    found = []
    try:
        from torchvision.models.shufflenetv2 import channel_shuffle

        found.append(channel_shuffle)
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    return tuple(found)


LEAF_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, *SLIM_LEAVES)
