"""Slimmable networks: layers, architectures, channel space, exact counting and slim export.

Public surface::

    supernet = build_supernet("mobilenet_v2", num_classes=10, input_size=32, width_mult=1.5)
    supernet.set_widths(supernet.space.uniform(0.5))
    count_macs(supernet.space, supernet.widths)
    slim = export_slim(supernet)                 # plain nn.Module with the sliced weights
    slim = build("mobilenet_v2", channels=cfg)   # fresh slim model from a ChannelConfig
    supernet = convert(my_module, input_size=224) # any conv/BN/linear network (see models.convert)
    build_supernet("torchvision:mobilenet_v3_small", num_classes=10, input_size=32)
"""

from __future__ import annotations

from torch import nn

from models.config import ChannelConfig, ConfigError
from models.convert import convert
from models.counting import count_macs, count_params
from models.export import export_slim
from models.registry import check_arch, list_archs
from models.supernet import NetSpec, Supernet, build_supernet
from models.zoo import allow_modules

__all__ = [
    "allow_modules",
    "check_arch",
    "ChannelConfig",
    "ConfigError",
    "NetSpec",
    "Supernet",
    "build",
    "build_supernet",
    "convert",
    "count_macs",
    "count_params",
    "export_slim",
    "list_archs",
]


def build(arch: str, channels: ChannelConfig | None = None, **net_kwargs) -> nn.Module:
    """A plain, freshly initialised model: the full network, or the slim one a config describes."""
    if channels is None:
        return export_slim(build_supernet(arch, **net_kwargs))
    if channels.arch != arch:
        raise ConfigError(f"config is for {channels.arch!r}, not {arch!r}")
    supernet = Supernet(channels.net)
    return export_slim(supernet, channels.widths(supernet))
