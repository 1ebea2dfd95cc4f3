"""Networks from outside autoslim, by name: ``torchvision:NAME``, ``timm:NAME``, ``MODULE:FUNCTION``.

No code per architecture: the network is built as its library builds it (no weights: those come
from the user, see `engine.initial_weights`), its conv/BN/linear layers swapped for slimmable ones
(`models.convert.slimmable`), and its channel space traced like any other.  ``MODULE:FUNCTION``
calls ``FUNCTION(num_classes=K)`` of a module an operator installed on the workers; modules must be
on the allow-list (`allow_modules`, set from the ``AUTOSLIM_MODEL_MODULES`` setting by the service
and the command line), because importing a module runs its code.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from models.convert import slimmable

PREFIXES = ("torchvision", "timm")
_ALLOWED_MODULES: set[str] = set()
_NOT_CNN = (nn.LayerNorm, nn.GroupNorm, nn.MultiheadAttention)
"""Layers that mark a network as not a conv/BN family (transformers, ConvNeXt): not listed."""


def allow_modules(names: list[str] | tuple[str, ...] | set[str]) -> None:
    """Allow ``MODULE:FUNCTION`` architectures from these modules (replaces the list)."""
    _ALLOWED_MODULES.clear()
    _ALLOWED_MODULES.update(n.strip() for n in names if n.strip())


def is_external(arch: str) -> bool:
    return ":" in arch


def check_external(arch: str) -> None:
    """Raise KeyError (naming what to do) unless ``arch`` names a network that can be built."""
    prefix, _, name = arch.partition(":")
    if prefix == "torchvision":
        if f"torchvision:{name}" not in torchvision_cnns():
            raise KeyError(
                f"{arch!r} is not one of torchvision's conv/BN classification networks; see `autoslim archs`"
            )
    elif prefix == "timm":
        _timm_names_check(name)
    else:
        _installed_builder(prefix, name)


def build_external(arch: str, num_classes: int, width_mult: float = 1.0) -> nn.Module:
    """The plain network ``arch`` names, at ``num_classes``, with slimmable layers."""
    if width_mult != 1.0:
        raise ValueError(f"{arch}: width_mult applies to the built-in networks; {arch} comes at its own width")
    return slimmable(_plain(arch, num_classes))


def _plain(arch: str, num_classes: int) -> nn.Module:
    prefix, _, name = arch.partition(":")
    if prefix == "torchvision":
        return _torchvision(name, num_classes)
    if prefix == "timm":
        return _timm(name, num_classes)
    return _installed(prefix, name, num_classes)


def _torchvision(name: str, num_classes: int) -> nn.Module:
    from torchvision import models as tv

    if name not in tv.list_models(module=tv):
        raise KeyError(f"unknown torchvision classification network {name!r}; see `autoslim archs`")
    return _without_aux_heads(functools.partial(tv.get_model, name, weights=None, num_classes=num_classes))


def _timm(name: str, num_classes: int) -> nn.Module:
    timm = _timm_names_check(name)
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def _timm_names_check(name: str):
    try:
        import timm
    except ImportError:
        raise KeyError("timm networks need timm: pip install 'autoslim[timm]'") from None
    if name not in timm.list_models():
        raise KeyError(f"unknown timm network {name!r}; see timm.list_models()")
    return timm


def _installed_builder(module_name: str, function: str) -> Callable[..., nn.Module]:
    if module_name not in _ALLOWED_MODULES:
        allowed = ", ".join(sorted(_ALLOWED_MODULES)) or "none"
        raise KeyError(
            f"module {module_name!r} is not on the allow-list of network modules "
            f"(AUTOSLIM_MODEL_MODULES; allowed: {allowed})"
        )
    try:
        builder = getattr(importlib.import_module(module_name), function, None)
    except ImportError as err:
        raise KeyError(f"module {module_name!r} cannot be imported on this machine: {err}") from None
    if not callable(builder):
        raise KeyError(f"module {module_name!r} has no function {function!r}")
    return builder


def _installed(module_name: str, function: str, num_classes: int) -> nn.Module:
    model = _installed_builder(module_name, function)(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{module_name}:{function} returned a {type(model).__name__}, not an nn.Module")
    return model


def _without_aux_heads(build: Callable[..., nn.Module]) -> nn.Module:
    """GoogLeNet and Inception train auxiliary classifiers; a slimmed network is one classifier.
    Their weight init (scipy's truncated normal) is skipped too: weights come from the user."""
    try:
        return build(aux_logits=False, init_weights=False)
    except TypeError:
        return build()


@functools.lru_cache(maxsize=1)
def torchvision_cnns() -> tuple[str, ...]:
    """torchvision's classification networks built from conv/BN/linear layers (parameters on the
    meta device, so checking all of them allocates nothing)."""
    from torchvision import models as tv

    names = []
    for name in tv.list_models(module=tv):
        with meta_parameters():
            net = _without_aux_heads(functools.partial(tv.get_model, name, weights=None))
        if not any(isinstance(m, _NOT_CNN) for m in net.modules()):
            names.append(f"torchvision:{name}")
    return tuple(names)


@contextmanager
def meta_parameters() -> Iterator[None]:
    """Modules built inside get their parameters and buffers on the meta device: shapes without
    memory, for counting and listing.  Other tensors (a builder's own arithmetic) stay real."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(module, name, param)

    def buffer(module: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        register_buffer(module, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def external_names() -> list[str]:
    """What ``autoslim archs`` lists beyond the built-in networks."""
    names = list(torchvision_cnns())
    try:
        import timm

        names.append(f"timm:NAME (timm {timm.__version__}: conv/BN families, e.g. timm:resnet18, timm:efficientnet_b0)")
    except ImportError:
        names.append("timm:NAME (pip install 'autoslim[timm]')")
    names.extend(f"{module}:FUNCTION" for module in sorted(_ALLOWED_MODULES))
    return names
