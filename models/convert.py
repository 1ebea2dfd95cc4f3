"""Any ordinary CNN made slimmable: its conv, BN and linear layers swapped for slimmable ones.

`convert` is the user-facing verb (as Model Optimizer's ``mtn.convert`` is): the user's module is
copied, every plain ``Conv2d`` / ``BatchNorm2d`` / ``Linear`` replaced by the slimmable layer with
the same weights, and the channel space traced.  At full width the result computes exactly what
the original does; `models.export_slim` gives back a plain module at any configuration, running
the user's own forward code.

Only layers whose forward autoslim knows are swapped: a subclass with its own forward (timm's
``Conv2dSame``, say) is an error naming the module, never a silent change of behaviour.  timm's
``BatchNormAct2d`` (BN, dropout, activation in one module) has a slimmable twin.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from models.ops import SlimBatchNorm2d, SlimConv2d, SlimLinear


class SlimBatchNormAct2d(SlimBatchNorm2d):
    """timm's ``BatchNormAct2d`` (BN, then its ``drop`` and ``act`` modules) with shared, sliced BN."""

    def __init__(self, *args, drop: nn.Module, act: nn.Module, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.drop, self.act = drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def slimmable(module: nn.Module) -> nn.Module:
    """Swap ``module``'s plain layers for slimmable ones in place, weights and statistics copied."""
    for name, child in list(module.named_modules()):
        new = _slim_twin(name, child)
        if new is not None:
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            replace_module(module, name, new.to(_device_of(child)))
    return module


def convert(
    module: nn.Module,
    input_size: int,
    divisor: int = 8,
    width_min: float = 0.25,
    keep: tuple[str, ...] | list[str] = (),
    name: str | None = None,
):
    """A `models.Supernet` of a copy of ``module`` (ordinary conv/BN/linear layers), traced at ``input_size``.

    ``keep`` lists modules whose channels are never removed (for ops autoslim cannot model);
    ``name`` is recorded as the architecture (configs of a converted module can only be rebuilt by
    name when it is a registered one: ``torchvision:NAME``, ``timm:NAME``, ``MODULE:FUNCTION``).
    """
    from models.supernet import NetSpec, Supernet

    net = slimmable(copy.deepcopy(module))
    num_classes = _num_classes(net, input_size)
    spec = NetSpec(
        name or f"custom:{type(module).__qualname__}",
        num_classes,
        input_size,
        1.0,
        divisor,
        width_min,
        keep=tuple(keep),
    )
    return Supernet(spec, net=net)


def _slim_twin(name: str, child: nn.Module) -> nn.Module | None:
    """The slimmable copy of a layer (None for modules that are not conv/BN/linear layers)."""
    kind = type(child)
    if kind is nn.Conv2d:
        if child.padding_mode != "zeros":
            raise TypeError(f"layer {name!r}: padding_mode {child.padding_mode!r} is not supported (only 'zeros')")
        return SlimConv2d(
            child.in_channels,
            child.out_channels,
            child.kernel_size,
            child.stride,
            child.padding,
            child.dilation,
            child.groups,
            child.bias is not None,
        )
    if kind is nn.BatchNorm2d:
        return SlimBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
    if kind is nn.Linear or _qualified(kind) in SAME_AS_LINEAR:
        return SlimLinear(child.in_features, child.out_features, child.bias is not None)
    if _is_timm_bn_act(child):
        return SlimBatchNormAct2d(
            child.num_features,
            child.eps,
            child.momentum,
            child.affine,
            child.track_running_stats,
            drop=child.drop,
            act=child.act,
        )
    if isinstance(child, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)) and not isinstance(
        child, (SlimConv2d, SlimBatchNorm2d, SlimLinear)
    ):
        raise TypeError(
            f"layer {name!r} is a {kind.__module__}.{kind.__qualname__}, a subclass of "
            f"{nn.Conv2d.__name__ if isinstance(child, nn.Conv2d) else type(child).__mro__[1].__name__} "
            "with its own forward, which autoslim cannot slice; keep the network's plain layers"
        )
    return None


SAME_AS_LINEAR = {"timm.layers.linear.Linear"}
"""Linear subclasses whose forward is nn.Linear's (timm's casts dtypes under TorchScript only)."""


def _qualified(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _is_timm_bn_act(child: nn.Module) -> bool:
    kind = type(child)
    return (
        kind.__name__ == "BatchNormAct2d"
        and kind.__module__.startswith("timm.")
        and hasattr(child, "act")
        and hasattr(child, "drop")
    )


def _num_classes(net: nn.Module, input_size: int) -> int:
    """The width of the network's output (one forward at full width on a blank image)."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, 3, input_size, input_size, device=_device_of(net)))
    finally:
        net.train(was_training)
    return int(out.shape[-1])


def _device_of(module: nn.Module) -> torch.device:
    first = next(iter(module.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` of ``root`` was."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
