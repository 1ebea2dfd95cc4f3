"""Turn a supernet at one configuration into an ordinary, physically slim ``nn.Module``.

The architecture object is copied and every slimmable layer replaced by a plain ``Conv2d`` /
``BatchNorm2d`` / ``Linear`` holding the first channels of the supernet's weights and the BN
statistics of that width (calibrated ones, for shared BN).  The result has no dependency on
autoslim and exports to TorchScript and ONNX like any torchvision model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from models.ops import SlimBatchNorm2d, SlimConv2d, SlimLinear, SwitchableBatchNorm2d
from models.space import Layer
from models.supernet import Supernet


def export_slim(supernet: Supernet, widths: dict[str, int] | None = None) -> nn.Module:
    """A plain copy of ``supernet.net`` at ``widths`` (default: its current widths), in eval mode."""
    widths = dict(supernet.widths if widths is None else widths)
    space = supernet.space
    net = copy.deepcopy(supernet.net)
    modules = dict(net.named_modules())
    with torch.no_grad():
        for name, layer in space.layers.items():
            cin = space.channels_of(layer.source, widths)
            _replace(net, name, _plain(modules[name], layer, cin, widths))
    return net.eval()


def _plain(module: nn.Module, layer: Layer, cin: int, widths: dict[str, int]) -> nn.Module:
    if isinstance(module, SlimConv2d):
        return _plain_conv(module, cin, cin if module.depthwise else widths[layer.group])
    if isinstance(module, SlimBatchNorm2d):
        return _plain_bn(module, cin)
    if isinstance(module, SwitchableBatchNorm2d):
        return _plain_bn(module.branch(cin), cin)
    if isinstance(module, SlimLinear):
        out = nn.Linear(cin, module.out_features, bias=module.bias is not None)
        out.weight.copy_(module.weight[:, :cin])
        if module.bias is not None:
            out.bias.copy_(module.bias)
        return out
    raise TypeError(f"cannot export {type(module).__name__}")


def _plain_conv(module: SlimConv2d, cin: int, cout: int) -> nn.Conv2d:
    groups = cin if module.depthwise else module.groups
    out = nn.Conv2d(cin, cout, module.kernel_size, module.stride, module.padding, module.dilation, groups,
                    bias=module.bias is not None)
    out.weight.copy_(module.weight[:cout, : cin // groups])
    if module.bias is not None:
        out.bias.copy_(module.bias[:cout])
    return out


def _plain_bn(module: nn.BatchNorm2d, c: int) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(c, eps=module.eps, momentum=0.1 if module.momentum is None else module.momentum)
    out.weight.copy_(module.weight[:c])
    out.bias.copy_(module.bias[:c])
    out.running_mean.copy_(module.running_mean[:c])
    out.running_var.copy_(module.running_var[:c])
    out.num_batches_tracked.copy_(module.num_batches_tracked)
    return out


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
