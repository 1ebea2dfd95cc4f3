"""Slimmable layers: one set of full-width weights, run at any channel count by slicing.

A layer's *input* width is whatever arrives (``x.shape[1]``); its *output* width is set from
outside through ``active_out`` (``None`` means full width).  Sub-networks therefore always use the
**first** k channels of every weight, as in Slimmable Networks and US-Nets, and no layer needs to
know its neighbours.  The channel space (``models.space``) decides which layers must agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SlimConv2d(nn.Conv2d):
    """Conv2d whose in/out channels are prefixes of the full ones.

    Depthwise convs (groups == in == out) follow their input: output width = input width.
    Grouped convs keep their group count; both widths must then be multiples of it.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.active_out: int | None = None
        self.depthwise = self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        if self.depthwise:
            weight, groups, cout = self.weight[:cin], cin, cin
        else:
            cout = self.active_out or self.out_channels
            groups = self.groups
            weight = self.weight[:cout, : cin // groups]
        bias = None if self.bias is None else self.bias[:cout]
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class SlimLinear(nn.Linear):
    """Linear layer whose input is a prefix of the full features; the output (classes) is fixed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.shape[1]], self.bias)


class SlimBatchNorm2d(nn.BatchNorm2d):
    """Shared BN (US-Net): one set of parameters and statistics, sliced to the input width.

    In training the sliced running buffers are views, so statistics update in place.  After
    training they are meaningless for any particular width: ``engine.calibrate`` re-estimates them
    per configuration (momentum ``None`` = exact cumulative average, as the US-Net paper does).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        use_batch_stats = self.training or not self.track_running_stats
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        running_mean = None if self.running_mean is None else self.running_mean[:c]
        running_var = None if self.running_var is None else self.running_var[:c]
        return F.batch_norm(
            x,
            running_mean,
            running_var,
            self.weight[:c] if self.affine else None,
            self.bias[:c] if self.affine else None,
            use_batch_stats,
            factor,
            self.eps,
        )


class SwitchableBatchNorm2d(nn.Module):
    """Switchable BN (Slimmable Networks): a private BN per allowed width.

    The width is read from the input, so switching the network's width switches BN with it.  A
    width outside the list is an error: S-Nets are only defined at their switches.
    """

    def __init__(self, widths: list[int], eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.widths = sorted(set(widths))
        self.num_features = self.widths[-1]
        self.bn = nn.ModuleList(nn.BatchNorm2d(c, eps=eps, momentum=momentum) for c in self.widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x.shape[1])(x)

    def branch(self, channels: int) -> nn.BatchNorm2d:
        """The BN owned by a width; raises for widths that are not switches."""
        try:
            return self.bn[self.widths.index(channels)]
        except ValueError:
            raise ValueError(f"switchable BN has no switch for {channels} channels (switches: {self.widths})") from None


SLIM_LEAVES = (SlimConv2d, SlimLinear, SlimBatchNorm2d, SwitchableBatchNorm2d)
"""Modules the graph tracer treats as opaque leaves."""
BN_TYPES = (SlimBatchNorm2d, SwitchableBatchNorm2d)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10% of it.

    The MobileNet rounding rule: aligned counts run faster on real hardware, and the 10% guard
    keeps very small layers from being rounded away.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class LayerFactory:
    """Builds the slimmable layers an architecture asks for.

    Architectures call ``conv`` / ``bn`` / ``linear`` instead of the torch classes, so one
    definition serves shared BN (US-Net, AutoSlim) and switchable BN (S-Net, which needs the list of
    width ratios to size each private BN).
    """

    def __init__(self, switch_ratios: list[float] | None = None, divisor: int = 8) -> None:
        self.switch_ratios = switch_ratios
        self.divisor = divisor

    def conv(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False) -> SlimConv2d:
        return SlimConv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=bias)

    def bn(self, channels: int) -> nn.Module:
        if self.switch_ratios is None:
            return SlimBatchNorm2d(channels)
        return SwitchableBatchNorm2d([ratio_channels(channels, r, self.divisor) for r in self.switch_ratios])

    def linear(self, cin: int, cout: int) -> SlimLinear:
        return SlimLinear(cin, cout)


def ratio_channels(full: int, ratio: float, divisor: int = 8) -> int:
    """Channels a layer of ``full`` channels keeps at a uniform width ratio (never above full)."""
    return full if ratio >= 1.0 else min(full, make_divisible(full * ratio, divisor))
