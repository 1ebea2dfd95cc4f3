"""A slimmable network together with its channel space: the object training and search work on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from models.ops import LayerFactory, SlimConv2d
from models.registry import get_builder, uses_cifar_stem
from models.space import ChannelSpace, trace_space


@dataclass(frozen=True)
class NetSpec:
    """Everything that determines a supernet's shape; stored in configs and checkpoints.

    ``switches`` non-empty means switchable BN (S-Net) at those width ratios; empty means shared BN
    with per-configuration calibration (US-Net / AutoSlim).
    """

    arch: str
    num_classes: int = 10
    input_size: int = 32
    width_mult: float = 1.0
    divisor: int = 8
    width_min: float = 0.25
    switches: tuple[float, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {**asdict(self), "switches": list(self.switches)}

    @classmethod
    def from_dict(cls, data: dict) -> "NetSpec":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["switches"] = tuple(known.get("switches", ()))
        return cls(**known)


class Supernet(nn.Module):
    """Wraps an architecture built from slimmable layers.

    ``net`` is the architecture itself, so layer names in configs are the architecture's own
    module names (``features.3.conv.0.0``) and match the exported slim model's.
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        if (spec.width_mult <= 0 or spec.num_classes < 1 or spec.input_size < 8 or spec.divisor < 1
                or not 0 < spec.width_min <= 1):
            raise ValueError(f"invalid network spec {spec}")
        switches = sorted({*spec.switches, 1.0}) if spec.switches else None
        layers = LayerFactory(switches, spec.divisor)
        self.spec = spec
        self.net = get_builder(spec.arch)(layers, spec.num_classes, spec.width_mult, uses_cifar_stem(spec.input_size))
        self.space: ChannelSpace = trace_space(self.net, spec.input_size, spec.divisor, spec.width_min)
        self._convs = {n: m for n, m in self.net.named_modules() if isinstance(m, SlimConv2d)}
        self.widths: dict[str, int] = self.space.full()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def set_widths(self, widths: dict[str, int]) -> None:
        """Run at these group widths from now on (a partial dict keeps the other groups' widths)."""
        merged = {**self.widths, **widths}
        for name, group in self.space.groups.items():
            self.space.check_width(group, merged[name], name)
        for name, count in self.space.to_layers(merged).items():
            self._convs[name].active_out = count
        self.widths = merged

    def set_full(self) -> None:
        self.set_widths(self.space.full())

    def set_uniform(self, ratio: float) -> None:
        self.set_widths(self.space.uniform(ratio))


def build_supernet(arch: str, num_classes: int = 10, input_size: int = 32, width_mult: float = 1.0,
                   divisor: int = 8, width_min: float = 0.25, switches: tuple[float, ...] = ()) -> Supernet:
    """Build a supernet by architecture name (see ``models.list_archs()``)."""
    return Supernet(NetSpec(arch, num_classes, input_size, width_mult, divisor, width_min, tuple(switches)))
