"""A slimmable network together with its channel space: the object training and search work on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from models.graph import Layer
from models.layout import Selection
from models.ops import BN_TYPES, SLIM_LEAVES, LayerFactory, SlimBatchNorm2d, SlimConv2d, SlimLinear
from models.registry import get_builder, uses_cifar_stem
from models.space import ChannelSpace, trace_space


@dataclass(frozen=True)
class NetSpec:
    """Everything that determines a supernet's shape; stored in configs and checkpoints.

    ``switches`` non-empty means switchable BN (S-Net) at those width ratios; empty means shared BN
    with per-configuration calibration (US-Net / AutoSlim).  ``keep`` names modules whose channels
    are never removed (`models.graph.analyse`).
    """

    arch: str
    num_classes: int = 10
    input_size: int = 32
    width_mult: float = 1.0
    divisor: int = 8
    width_min: float = 0.25
    switches: tuple[float, ...] = field(default_factory=tuple)
    keep: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {**asdict(self), "switches": list(self.switches), "keep": list(self.keep)}

    @classmethod
    def from_dict(cls, data: dict) -> NetSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["switches"] = tuple(known.get("switches", ()))
        known["keep"] = tuple(known.get("keep", ()))
        return cls(**known)


class Supernet(nn.Module):
    """Wraps an architecture built from slimmable layers.

    ``net`` is the architecture itself, so layer names in configs are the architecture's own
    module names (``features.3.conv.0.0``) and match the exported slim model's.  It is built from
    ``spec`` by name, or given (`models.convert` wraps a user's module).
    """

    def __init__(self, spec: NetSpec, net: nn.Module | None = None) -> None:
        super().__init__()
        if (
            spec.width_mult <= 0
            or spec.num_classes < 1
            or spec.input_size < 8
            or spec.divisor < 1
            or not 0 < spec.width_min <= 1
        ):
            raise ValueError(f"invalid network spec {spec}")
        if net is None:
            switches = sorted({*spec.switches, 1.0}) if spec.switches else None
            layers = LayerFactory(switches, spec.divisor)
            net = get_builder(spec.arch)(layers, spec.num_classes, spec.width_mult, uses_cifar_stem(spec.input_size))
        self.spec = spec
        self.net = net
        self.space: ChannelSpace = trace_space(self.net, spec.input_size, spec.divisor, spec.width_min, spec.keep)
        modules = dict(self.net.named_modules())
        for name in self.space.layers:
            if not isinstance(modules[name], SLIM_LEAVES):
                raise TypeError(
                    f"layer {name!r} is a plain {type(modules[name]).__name__}; build networks from "
                    "models.ops layers, or convert an ordinary module with models.convert"
                )
        self._slim = [
            (modules[name], layer)
            for name, layer in self.space.layers.items()
            if isinstance(modules[name], (SlimConv2d, SlimLinear, SlimBatchNorm2d))
        ]
        self.widths: dict[str, int] = self.space.full()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def set_widths(self, widths: dict[str, int]) -> None:
        """Run at these group widths from now on (a partial dict keeps the other groups' widths)."""
        merged = {**self.widths, **widths}
        for name, group in self.space.groups.items():
            self.space.check_width(group, merged[name], name)
        for module, layer in self._slim:
            rows, cols = selections(module, layer, merged)
            # Plain attributes: object.__setattr__ skips nn.Module's parameter/buffer bookkeeping,
            # which cost more than the selections themselves (a search sets widths per candidate).
            object.__setattr__(module, "rows", rows)
            if not isinstance(module, SlimBatchNorm2d):
                object.__setattr__(module, "cols", cols)
        self.widths = merged

    def set_full(self) -> None:
        self.set_widths(self.space.full())

    def set_uniform(self, ratio: float) -> None:
        self.set_widths(self.space.uniform(ratio))


def selections(module: nn.Module, layer: Layer, widths: dict[str, int]) -> tuple[Selection | None, Selection | None]:
    """The weight rows and columns ``layer`` keeps at ``widths`` (None: all of them).

    Rows are output channels (a BN's channels, a depthwise conv's kept input channels); columns
    are input channels, per group for a grouped conv (every group keeps the same ones).
    """
    full = lambda s, n: None if isinstance(s, slice) and s.stop == n else s  # noqa: E731
    if isinstance(module, BN_TYPES):
        return full(layer.inputs.select(widths), layer.in_full), None
    if layer.depthwise:
        return full(layer.inputs.select(widths), layer.in_full), None
    rows = full(layer.outputs.select(widths), layer.out_full)
    if layer.kind == "conv" and layer.groups > 1:
        per_group = layer.in_full // layer.groups
        kept = layer.inputs.mask(widths)[:per_group]
        cols = slice(0, int(kept.sum())) if kept[: kept.sum()].all() else torch.as_tensor(kept.nonzero()[0])
        return rows, full(cols, per_group)
    return rows, full(layer.inputs.select(widths), layer.in_full)


def build_supernet(
    arch: str,
    num_classes: int = 10,
    input_size: int = 32,
    width_mult: float = 1.0,
    divisor: int = 8,
    width_min: float = 0.25,
    switches: tuple[float, ...] = (),
    keep: tuple[str, ...] = (),
) -> Supernet:
    """Build a supernet by architecture name (see ``models.list_archs()``)."""
    return Supernet(
        NetSpec(arch, num_classes, input_size, width_mult, divisor, width_min, tuple(switches), tuple(keep))
    )
