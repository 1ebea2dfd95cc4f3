"""Architecture registry: a name maps to a builder ``(layers, num_classes, width_mult, cifar_stem)``.

Registering is all a new architecture needs: the channel space is traced, MACs counted and export
done generically, and the test-suite is parametrised over this registry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from models.ops import LayerFactory

Builder = Callable[[LayerFactory, int, float, bool], nn.Module]
_REGISTRY: dict[str, Builder] = {}

CIFAR_STEM_MAX_INPUT = 64
"""Inputs up to this many pixels get the CIFAR stem (no early downsampling)."""


def register(name: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        _REGISTRY[name] = builder
        return builder

    return wrap


def list_archs() -> list[str]:
    """The built-in networks (the papers' CIFAR and ImageNet layouts)."""
    _load_builtin()
    return sorted(_REGISTRY)


def check_arch(arch: str) -> None:
    """Raise KeyError with what to do unless ``arch`` is built in or names a buildable external network."""
    from models import zoo

    if zoo.is_external(arch):
        zoo.check_external(arch)
    else:
        get_builder(arch)


def get_builder(arch: str) -> Builder:
    """The builder of a built-in network, or of ``torchvision:NAME`` / ``timm:NAME`` / ``MODULE:FUNCTION``."""
    from models import zoo

    if zoo.is_external(arch):
        return functools.partial(_external, arch)
    _load_builtin()
    if arch not in _REGISTRY:
        raise KeyError(f"unknown architecture {arch!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[arch]


def _external(arch: str, layers: LayerFactory, num_classes: int, width_mult: float, cifar_stem: bool) -> nn.Module:
    """External networks keep their own stems; S-Net's switchable BN needs a built-in network."""
    from models import zoo

    if layers.switch_ratios is not None:
        raise ValueError(f"{arch}: S-Net mode (switchable BN) needs a built-in network; use usnet-nonuniform")
    return zoo.build_external(arch, num_classes, width_mult)


def uses_cifar_stem(input_size: int) -> bool:
    """The stem follows the input size: small images skip the ImageNet stem's 4x downsampling."""
    return input_size <= CIFAR_STEM_MAX_INPUT


def _load_builtin() -> None:
    # Imported lazily so that `models.registry` has no import cycle with the architecture files.
    import models.mobilenet_v1  # noqa: F401
    import models.mobilenet_v2  # noqa: F401
    import models.resnet  # noqa: F401
