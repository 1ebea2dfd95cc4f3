"""Slimmable layers: one set of full-width weights, run at any configuration by slicing.

Which input and output channels a layer keeps is set from outside (`Supernet.set_widths`, from
the graph analysis): ``rows`` selects output channels (a conv's or linear's weight rows, a BN's
channels) and ``cols`` a weight's input columns.  A selection is a slice when the kept channels are
a prefix - every layer of a plain chain, as in Slimmable Networks and US-Nets, where slicing is a
view - and an index tensor where a concatenation or a grouped conv interleaves kept and removed
channels.  ``None`` keeps everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.layout import Selection, take


class SlimConv2d(nn.Conv2d):
    """Conv2d running on a selection of its weights.

    Depthwise convs (groups == in == out) keep one filter per kept input channel (``rows``);
    grouped convs keep their group count, with the same columns of every group.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows: Selection | None = None
        self.cols: Selection | None = None
        self.depthwise = self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        rows, cols = self.rows, self.cols
        if self.depthwise:
            rows = _prefix_if_narrow(rows, cin, self.in_channels)
        else:
            cols = _prefix_if_narrow(cols, cin // self.groups, self.in_channels // self.groups)
        weight, bias = _select(self.weight, self.bias, rows, cols)
        return F.conv2d(
            x, weight, bias, self.stride, self.padding, self.dilation, cin if self.depthwise else self.groups
        )


class SlimLinear(nn.Linear):
    """Linear layer on a selection of its input features (and of its outputs, for hidden layers)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows: Selection | None = None
        self.cols: Selection | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = _select(
            self.weight, self.bias, self.rows, _prefix_if_narrow(self.cols, x.shape[1], self.in_features)
        )
        return F.linear(x, weight, bias)


def _prefix_if_narrow(selection: Selection | None, arriving: int, full: int) -> Selection | None:
    return slice(0, arriving) if selection is None and arriving < full else selection


def _select(
    weight: torch.Tensor, bias: torch.Tensor | None, rows: Selection | None, cols: Selection | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if rows is not None:
        weight = take(weight, rows, 0)
        bias = None if bias is None else take(bias, rows, 0)
    if cols is not None:
        weight = take(weight, cols, 1)
    return weight, bias


class SlimBatchNorm2d(nn.BatchNorm2d):
    """Shared BN (US-Net): one set of parameters and statistics, used at the kept channels.

    In training the running buffers of a prefix are views, so statistics update in place (an
    index selection is gathered and written back).  After training they are meaningless for any
    particular configuration: ``engine.calibrate`` re-estimates them per configuration (momentum
    ``None`` = exact cumulative average, as the US-Net paper does).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows: Selection | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch_stats = self.training or not self.track_running_stats
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        rows = _prefix_if_narrow(self.rows, x.shape[1], self.num_features)
        pick = (lambda t: t) if rows is None else (lambda t: None if t is None else take(t, rows, 0))
        running_mean, running_var = pick(self.running_mean), pick(self.running_var)
        out = batch_norm(
            x,
            running_mean,
            running_var,
            pick(self.weight) if self.affine else None,
            pick(self.bias) if self.affine else None,
            use_batch_stats,
            factor,
            self.eps,
        )
        if isinstance(rows, torch.Tensor) and self.training and self.track_running_stats:
            with torch.no_grad():  # gathered copies: write the updated statistics back
                self.running_mean.index_copy_(0, rows.to(x.device), running_mean)
                self.running_var.index_copy_(0, rows.to(x.device), running_var)
        return out


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Half precision (autocast) promoted to float32, float32 and float64 kept: statistics and losses
    need float32's range, and a float64 run (the data-parallel equivalence test) must stay float64."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


_SYNC: list[Any] = []
"""The process group whose batch statistics BN layers in training share (empty: none)."""


@contextmanager
def synchronised_batch_norm(group: Any = None) -> Iterator[None]:
    """BN layers in training normalise with the statistics of the whole batch spread over the ranks
    of ``group`` (None: every rank), so data-parallel training equals one process with the whole
    batch.  Off outside the block: calibration and evaluation run per rank on whole samples."""
    _SYNC.append(group)
    try:
        yield
    finally:
        _SYNC.pop()


def batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    batch_stats: bool,
    factor: float,
    eps: float,
) -> torch.Tensor:
    """`F.batch_norm`, with batch statistics reduced across ranks inside `synchronised_batch_norm`."""
    if not (batch_stats and _SYNC):
        return F.batch_norm(x, running_mean, running_var, weight, bias, batch_stats, factor, eps)
    return _synced_batch_norm(x, running_mean, running_var, weight, bias, factor, eps, _SYNC[-1])


def _synced_batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    factor: float,
    eps: float,
    group: Any,
) -> torch.Tensor:
    """Per-channel sum and sum of squares (and the count) summed over the ranks in one all-reduce
    that autograd differentiates (its backward sums the ranks' gradients of the statistics), so
    each rank's input gradient is the one the whole batch would give it."""
    from torch.distributed import nn as dist_nn

    c = x.shape[1]
    xf = at_least_float32(x)
    count = xf.new_full((1,), x.numel() / c)
    totals = dist_nn.functional.all_reduce(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count]), group=group)
    n = totals[2 * c]
    mean = totals[:c] / n
    var = (totals[c : 2 * c] / n - mean * mean).clamp_min(0)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.mul_(1 - factor).add_(mean.detach().to(running_mean.dtype), alpha=factor)
            unbiased = var.detach() * (n / (n - 1).clamp_min(1))
            running_var.mul_(1 - factor).add_(unbiased.to(running_var.dtype), alpha=factor)
    shape = (1, c, 1, 1)
    out = (xf - mean.view(shape)) * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        out = out * weight.to(xf.dtype).view(shape)
    if bias is not None:
        out = out + bias.to(xf.dtype).view(shape)
    return out.to(x.dtype)


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
        bn = self.branch(x.shape[1])
        if not (bn.training and _SYNC):
            return bn(x)
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        return batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, factor, bn.eps)

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

    def conv(
        self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False
    ) -> SlimConv2d:
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
