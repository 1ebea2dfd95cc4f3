"""The channel space of a network, derived by tracing its graph with torch.fx.

Which layers must share a width follows from the graph, not from a per-architecture list:
- a residual addition ties the producers of both operands;
- a depthwise conv's output is its input;
- BN, activations, pooling, dropout and flatten pass the width through;
- a linear layer's output (the classes) is fixed.
- a concatenation or product of two branches is not modelled and raises, rather than mis-counting.
Each resulting group of convs shares one output width.  The trace also records, per layer, where
its input width comes from and its output resolution, which is all that exact MAC and parameter
counting and slim-model export need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx, nn

from models.ops import BN_TYPES, SLIM_LEAVES, SlimConv2d, SlimLinear, make_divisible

IMAGE = "@image"
"""Source name of the network input (3 fixed channels)."""

_TIES = {"add", "add_", "iadd", "sub", "sub_", "isub"}
"""Elementwise ops whose tensor operands must have the same channels (function or method names)."""
_TIES_NOT_SUPPORTED = {"cat", "concat", "concatenate", "stack", "mul", "mul_", "imul"}
"""Ops that combine channels in ways the space does not model, when given two or more tensors."""


@dataclass
class Layer:
    """One conv, BN or linear layer: where its input width comes from and its fixed geometry."""

    name: str
    kind: str  # "conv" | "bn" | "linear"
    source: str  # group of its input channels, or IMAGE
    group: str | None = None  # conv only: the group its output belongs to
    in_full: int = 0
    out_full: int = 0
    kernel: tuple[int, int] = (1, 1)
    groups: int = 1
    depthwise: bool = False
    bias: bool = False
    out_hw: tuple[int, int] = (1, 1)


@dataclass
class Group:
    """Convs whose outputs must share one width; counts are multiples of ``divisor`` in [min, max]."""

    name: str
    layers: list[str]
    max: int
    min: int
    divisor: int

    def grid(self) -> list[int]:
        """Every legal width, widest first (the full width is always legal even if unaligned)."""
        widths = list(range(self.max // self.divisor * self.divisor, self.min - 1, -self.divisor))
        return sorted({self.max, *widths}, reverse=True)


@dataclass
class ChannelSpace:
    """Groups and layer records of one traced network at one input size."""

    groups: dict[str, Group]
    layers: dict[str, Layer]
    input_size: int
    in_channels: int = 3
    _layer_group: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._layer_group = {name: g.name for g in self.groups.values() for name in g.layers}

    # ---- configurations -------------------------------------------------------------------
    def full(self) -> dict[str, int]:
        return {g.name: g.max for g in self.groups.values()}

    def smallest(self) -> dict[str, int]:
        return {g.name: g.min for g in self.groups.values()}

    def uniform(self, ratio: float) -> dict[str, int]:
        """Group widths of a uniform width ratio of the full network (clamped to the bounds)."""
        from models.ops import ratio_channels

        return {g.name: max(g.min, ratio_channels(g.max, ratio, g.divisor)) for g in self.groups.values()}

    def random(self, generator: torch.Generator | None = None) -> dict[str, int]:
        """Each group sampled independently and uniformly from its grid (nonuniform US-Net)."""
        out = {}
        for g in self.groups.values():
            grid = g.grid()
            out[g.name] = grid[int(torch.randint(len(grid), (1,), generator=generator))]
        return out

    def channels_of(self, source: str, widths: dict[str, int]) -> int:
        return self.in_channels if source == IMAGE else widths[source]

    def group_of(self, layer: str) -> str:
        return self._layer_group[layer]

    def to_layers(self, widths: dict[str, int]) -> dict[str, int]:
        """Group widths -> output channels of every conv by module name (the config file form)."""
        return {name: widths[group] for name, group in self._layer_group.items()}

    def from_layers(self, channels: dict[str, int]) -> dict[str, int]:
        """Per-conv channels -> group widths, rejecting anything that is not a legal configuration.

        Errors name the layer: unknown layers, missing layers, counts that break a group tie,
        counts outside the bounds or off the divisor grid.
        """
        unknown = sorted(set(channels) - set(self._layer_group))
        if unknown:
            raise ValueError(f"unknown layer {unknown[0]!r} (this network's prunable layers: {', '.join(self._layer_group)})")
        widths: dict[str, int] = {}
        for g in self.groups.values():
            for name in g.layers:
                if name not in channels:
                    raise ValueError(f"layer {name!r} has no channel count")
                count = channels[name]
                if not isinstance(count, int) or isinstance(count, bool):
                    raise ValueError(f"layer {name!r}: channel count must be an integer, got {count!r}")
                if g.name in widths and widths[g.name] != count:
                    raise ValueError(
                        f"layer {name!r} has {count} channels but must match {g.name!r} ({widths[g.name]}): "
                        "they are tied by a residual addition or a depthwise conv"
                    )
                widths[g.name] = count
            self.check_width(g, widths[g.name], g.layers[0])
        return widths

    def check_width(self, group: Group, count: int, layer: str) -> None:
        if not group.min <= count <= group.max:
            raise ValueError(f"layer {layer!r}: {count} channels is outside [{group.min}, {group.max}]")
        if count not in group.grid():
            raise ValueError(f"layer {layer!r}: {count} channels is not a multiple of {group.divisor}")


def trace_space(net: nn.Module, input_size: int, divisor: int = 8, width_min: float = 0.25) -> ChannelSpace:
    """Trace ``net`` (built from slimmable layers) and derive its channel space.

    ``width_min`` sets each group's lower bound as a fraction of its full width (US-Net's lower
    width), rounded to the divisor; the upper bound is the full width.
    """
    graph = _LeafTracer().trace(net)
    modules = dict(net.named_modules())
    ties = _UnionFind()
    source: dict[fx.Node, str | None] = {}
    layers: dict[str, Layer] = {}
    for node in graph.nodes:
        source[node] = _propagate(node, modules, source, ties, layers)
    _record_resolution(net, layers, input_size)
    members: dict[str, list[str]] = {}
    for layer in layers.values():
        if layer.kind == "conv":
            members.setdefault(ties.find(layer.name), []).append(layer.name)
    groups = {}
    for root, names in members.items():
        name = names[0]
        full = layers[name].out_full
        if root == ties.find(IMAGE):
            raise ValueError(f"layer {name!r} is tied to the input image; its width cannot be searched")
        groups[name] = Group(name, names, full, min(full, make_divisible(full * width_min, divisor)), divisor)
    root_to_group = {ties.find(g.layers[0]): g.name for g in groups.values()}
    for layer in layers.values():
        layer.source = IMAGE if layer.source == IMAGE else root_to_group[ties.find(layer.source)]
        if layer.kind == "conv":
            layer.group = root_to_group[ties.find(layer.name)]
    return ChannelSpace(groups, layers, input_size)


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, SLIM_LEAVES) or super().is_leaf_module(m, qualname)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # Keep the earlier-traced element as root so group names are the first conv.
            self.parent[rb] = ra


def _op_name(node: fx.Node) -> str:
    """``operator.add``, ``torch.add`` and ``x.add(...)`` all read as ``"add"``."""
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


def _first_tensor_source(node: fx.Node, source: dict[fx.Node, str | None]) -> str | None:
    # all_input_nodes also sees tensors nested in lists (torch.cat([a, b])) and keyword arguments.
    for arg in node.all_input_nodes:
        return source.get(arg)
    return None


def _propagate(node: fx.Node, modules: dict[str, nn.Module], source: dict[fx.Node, str | None],
               ties: _UnionFind, layers: dict[str, Layer]) -> str | None:
    """The channel source of one graph node, recording layers and ties on the way."""
    if node.op == "placeholder":
        return IMAGE
    if node.op in ("output", "get_attr"):
        return None
    incoming = _first_tensor_source(node, source)
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, SlimConv2d):
            layers[node.target] = Layer(
                node.target, "conv", incoming, in_full=module.in_channels, out_full=module.out_channels,
                kernel=tuple(module.kernel_size), groups=module.groups, depthwise=module.depthwise,
                bias=module.bias is not None,
            )
            if module.depthwise:
                ties.union(incoming, node.target)
            return node.target
        if isinstance(module, BN_TYPES):
            layers[node.target] = Layer(node.target, "bn", incoming, in_full=module.num_features, out_full=module.num_features)
            return incoming
        if isinstance(module, SlimLinear):
            layers[node.target] = Layer(node.target, "linear", incoming, in_full=module.in_features,
                                        out_full=module.out_features, bias=module.bias is not None)
            return None
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.BatchNorm2d)):
            raise TypeError(f"layer {node.target!r} is a plain {type(module).__name__}; build networks from models.ops layers")
        return incoming
    name = _op_name(node)
    if name in _TIES:
        operands = [source.get(a) for a in node.all_input_nodes]
        operands = [s for s in operands if s is not None]
        for other in operands[1:]:
            ties.union(operands[0], other)
        return operands[0] if operands else None
    if name in _TIES_NOT_SUPPORTED and len(node.all_input_nodes) > 1:
        raise NotImplementedError(
            f"graph node {node.name!r} ({name} of {', '.join(a.name for a in node.all_input_nodes)}) combines "
            "channels in a way the channel space does not model; only residual additions can join branches"
        )
    return incoming


def _record_resolution(net: nn.Module, layers: dict[str, Layer], input_size: int) -> None:
    """One full-width forward on a blank image records every conv's output resolution."""
    modules = dict(net.named_modules())
    handles = []
    for name, layer in layers.items():
        if layer.kind == "conv":
            def hook(_m, _inp, out, layer=layer):
                layer.out_hw = (int(out.shape[-2]), int(out.shape[-1]))
            handles.append(modules[name].register_forward_hook(hook))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, input_size, input_size))
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
