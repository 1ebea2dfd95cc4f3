"""The channel space of a network: its groups, their bounds, and configurations over them.

Which layers must share a width comes from the graph analysis (`models.graph`), never from a
per-architecture list: residual additions, gates, depthwise and grouped convs, chunks and shuffles
tie channels; concatenations join them.  A configuration is one width per group (each block of
the group keeps its first ``width`` channels); the config file form names instead the output
channels of every prunable layer by module name.
"""

from __future__ import annotations

import torch
from torch import nn

from models.graph import IMAGE, ChannelGraph, Layer, analyse
from models.slots import Group

__all__ = ["IMAGE", "ChannelSpace", "Group", "Layer", "trace_space"]


class ChannelSpace:
    """Groups and layer records of one analysed network at one input size."""

    def __init__(self, graph: ChannelGraph) -> None:
        self.graph = graph
        self.groups: dict[str, Group] = graph.groups
        self.layers: dict[str, Layer] = graph.layers
        self.input_size = graph.input_size
        self.in_channels = graph.in_channels
        self.prunable = {
            name: layer
            for name, layer in graph.layers.items()
            if layer.kind in ("conv", "linear") and not layer.outputs.fixed
        }
        """Layers whose output channels a configuration changes: the keys of a config's ``channels``."""

    def __deepcopy__(self, memo: dict) -> ChannelSpace:
        """Itself: the analysis of an architecture, never changed after tracing, so a copied supernet
        (a frozen teacher, say) shares it.  Copying it would also recurse through torch.fx's linked
        nodes, past Python's limit on a converted MobileNetV3."""
        return self

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

    # ---- per layer ------------------------------------------------------------------------
    def in_channels_of(self, layer: str, widths: dict[str, int]) -> int:
        return self.layers[layer].inputs.count(widths)

    def out_channels_of(self, layer: str, widths: dict[str, int]) -> int:
        return self.layers[layer].outputs.count(widths)

    def group_of(self, layer: str) -> str:
        """The group a layer's output channels belong to (layers with one group in their output)."""
        layout = self.layers[layer].outputs
        if len(layout.group_names) != 1:
            raise KeyError(f"layer {layer!r} has {'no' if layout.fixed else 'several'} channel groups in its output")
        return layout.group_names[0]

    def to_layers(self, widths: dict[str, int]) -> dict[str, int]:
        """Group widths -> output channels of every prunable layer by module name (the config form)."""
        return {name: layer.outputs.count(widths) for name, layer in self.prunable.items()}

    def from_layers(self, channels: dict[str, int]) -> dict[str, int]:
        """Per-layer channels -> group widths, rejecting anything that is not a legal configuration.

        Errors name the layer: unknown layers, missing layers, counts that break a group tie,
        counts outside the bounds or off the divisor grid.
        """
        unknown = sorted(set(channels) - set(self.prunable))
        if unknown:
            raise ValueError(
                f"unknown layer {unknown[0]!r} (this network's prunable layers: {', '.join(self.prunable)})"
            )
        for name in self.prunable:
            count = channels.get(name)
            if name not in channels:
                raise ValueError(f"layer {name!r} has no channel count")
            if not isinstance(count, int) or isinstance(count, bool):
                raise ValueError(f"layer {name!r}: channel count must be an integer, got {count!r}")
        widths: dict[str, int] = {}
        for name, layer in self.prunable.items():
            layout = layer.outputs
            if len(layout.group_names) != 1:
                continue
            group = layout.group_names[0]
            share, rest = divmod(channels[name] - layout.fixed_count, layout.multiplicity[group])
            if rest or share < 1:
                raise ValueError(
                    f"layer {name!r}: {channels[name]} channels cannot be split evenly over its "
                    f"{layout.multiplicity[group]} tied blocks"
                )
            if group in widths and widths[group] != share:
                raise ValueError(
                    f"layer {name!r} has {channels[name]} channels but must match {group!r} "
                    f"({self.groups[group].layers[0]} has {widths[group]} per block): "
                    "they are tied by a residual addition, a gate, a chunk or a depthwise conv"
                )
            self.check_width(self.groups[group], share, name)
            widths[group] = share
        missing = [g for g in self.groups if g not in widths]
        if missing:
            raise ValueError(f"group {missing[0]!r} is not determined by any layer's channel count")
        for name, layer in self.prunable.items():
            if layer.outputs.count(widths) != channels[name]:
                raise ValueError(
                    f"layer {name!r} has {channels[name]} channels; its groups give {layer.outputs.count(widths)}"
                )
        return widths

    def check_width(self, group: Group, count: int, layer: str) -> None:
        if not group.min <= count <= group.max:
            raise ValueError(f"layer {layer!r}: {count} channels is outside [{group.min}, {group.max}]")
        if count not in group.grid():
            raise ValueError(f"layer {layer!r}: {count} channels is not a multiple of {group.divisor}")


def trace_space(
    net: nn.Module, input_size: int, divisor: int = 8, width_min: float = 0.25, keep: tuple[str, ...] = ()
) -> ChannelSpace:
    """Analyse ``net`` and derive its channel space (see `models.graph.analyse`)."""
    return ChannelSpace(analyse(net, input_size, divisor, width_min, keep=keep))
