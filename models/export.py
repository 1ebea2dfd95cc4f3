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

from models.convert import SlimBatchNormAct2d, replace_module
from models.layout import take
from models.ops import SlimBatchNorm2d, SlimConv2d, SlimLinear, SwitchableBatchNorm2d
from models.space import Layer
from models.supernet import Supernet, selections


def export_slim(supernet: Supernet, widths: dict[str, int] | None = None) -> nn.Module:
    """A plain copy of ``supernet.net`` at ``widths`` (default: its current widths), in eval mode."""
    widths = dict(supernet.widths if widths is None else widths)
    space = supernet.space
    net = copy.deepcopy(supernet.net)
    modules = dict(net.named_modules())
    with torch.no_grad():
        for name, layer in space.layers.items():
            replace_module(net, name, _plain(modules[name], layer, widths))
    return net.eval()


def _plain(module: nn.Module, layer: Layer, widths: dict[str, int]) -> nn.Module:
    cin, cout = layer.inputs.count(widths), layer.outputs.count(widths)
    if isinstance(module, SwitchableBatchNorm2d):
        return _plain_bn(module.branch(cin), slice(0, cin))
    rows, cols = selections(module, layer, widths)
    rows = slice(0, module.weight.shape[0]) if rows is None else rows
    if isinstance(module, SlimBatchNormAct2d):
        return nn.Sequential(_plain_bn(module, rows), copy.deepcopy(module.drop), copy.deepcopy(module.act))
    if isinstance(module, SlimBatchNorm2d):
        return _plain_bn(module, rows)
    if isinstance(module, SlimConv2d):
        groups = cin if module.depthwise else module.groups
        out = nn.Conv2d(
            cin,
            cout,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            groups,
            bias=module.bias is not None,
        )
    elif isinstance(module, SlimLinear):
        out = nn.Linear(cin, cout, bias=module.bias is not None)
    else:
        raise TypeError(f"cannot export {type(module).__name__}")
    weight = take(module.weight, rows, 0)
    out.weight.copy_(weight if cols is None else take(weight, cols, 1))
    if module.bias is not None:
        out.bias.copy_(take(module.bias, rows, 0))
    return out


def _plain_bn(module: nn.BatchNorm2d, rows) -> nn.BatchNorm2d:
    kept = take(module.running_mean, rows, 0)
    out = nn.BatchNorm2d(len(kept), eps=module.eps, momentum=0.1 if module.momentum is None else module.momentum)
    out.weight.copy_(take(module.weight, rows, 0))
    out.bias.copy_(take(module.bias, rows, 0))
    out.running_mean.copy_(kept)
    out.running_var.copy_(take(module.running_var, rows, 0))
    out.num_batches_tracked.copy_(module.num_batches_tracked)
    return out
