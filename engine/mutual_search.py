"""Width x resolution search for a MutualNet supernet: no greedy pass, no retraining.

MutualNet trains uniform widths at several input resolutions, so deployment picks a width x
resolution point (a uniform width ratio in steps of 0.05 from the lower bound to 1, at a training
resolution): each point is scored on the held-out split resized to its resolution, with BN statistics
re-estimated at that width *and* resolution (statistics change with the input scale), and each
budget takes the most accurate point that fits it.  MACs depend on the resolution, so every
resolution gets its own traced channel space; the weights are shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch.nn.functional as F

from engine.budgets import Budget, Ranges
from engine.calibrate import calibrate_bn, evaluate
from engine.data.batches import Batches
from engine.spec import CancelFn, Cancelled, TrajectoryPoint
from models import Supernet, count_macs, count_params
from models.registry import uses_cifar_stem

RATIO_STEP = 0.05


def width_ratios(width_min: float, step: float = RATIO_STEP) -> list[float]:
    """``width_min``, then every multiple of ``step`` above it, up to 1 (widest first)."""
    count = int(round((1.0 - width_min) / step + 1e-9))
    ratios = {round(1.0 - i * step, 4) for i in range(count + 1)} | {width_min}
    return sorted((r for r in ratios if r >= width_min - 1e-9), reverse=True)


def at_resolution(supernet: Supernet, resolution: int) -> Supernet:
    """The same weights traced at another input size (its MACs and exported configs use that size)."""
    if resolution == supernet.spec.input_size:
        return supernet
    if uses_cifar_stem(resolution) != uses_cifar_stem(supernet.spec.input_size):
        raise ValueError(
            f"resolution {resolution} would change {supernet.spec.arch}'s stem; "
            f"keep every resolution on the same side of the CIFAR/ImageNet stem threshold"
        )
    other = Supernet(replace(supernet.spec, input_size=resolution))
    other.load_state_dict(supernet.state_dict())
    device = next(supernet.parameters()).device
    return other.to(device).eval()


def resized(batches: Batches, resolution: int) -> Batches:
    """``batches`` at ``resolution`` px, resized as MutualNet training resizes (bilinear, antialiased)."""
    if batches.x.shape[-1] == resolution:
        return batches
    x = F.interpolate(batches.x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return Batches(x, batches.y, batches.batch_size)


def score_mutual_points(
    supernet: Supernet,
    calib: Batches,
    score: Batches,
    resolutions: list[int],
    latency: Callable[[int, dict[str, int]], float] | None = None,
    should_cancel: CancelFn | None = None,
    on_point: Callable[[TrajectoryPoint, float], None] | None = None,
) -> list[TrajectoryPoint]:
    """Score every (width ratio, resolution), numbered in that order; ``on_point(point, fraction_done)`` after each."""
    ratios = width_ratios(supernet.spec.width_min)
    points: list[TrajectoryPoint] = []
    total = len(ratios) * len(resolutions)
    for resolution in sorted(resolutions, reverse=True):
        net = at_resolution(supernet, resolution)
        calib_r, score_r = resized(calib, resolution), resized(score, resolution)
        for ratio in ratios:
            if should_cancel and should_cancel():
                raise Cancelled(f"width x resolution search cancelled after {len(points)} of {total} points")
            widths = net.space.uniform(ratio)
            net.set_widths(widths)
            calibrate_bn(net, calib_r)
            result = evaluate(net, score_r)
            point = TrajectoryPoint(
                index=len(points),
                widths=widths,
                macs=count_macs(net.space, widths),
                params=count_params(net.space, widths),
                latency_ms=None if latency is None else latency(resolution, widths),
                val_accuracy=result.accuracy,
                val_loss=result.loss,
                ratio=ratio,
                resolution=resolution,
            )
            points.append(point)
            if on_point:
                on_point(point, len(points) / total)
    return points


def mutual_range(supernet: Supernet, resolutions: list[int]) -> Ranges:
    """MACs and params the width x resolution points span (the smallest width at the lowest resolution, the full at the highest)."""
    low, high = at_resolution(supernet, min(resolutions)), at_resolution(supernet, max(resolutions))
    small, full = low.space.uniform(supernet.spec.width_min), high.space.full()
    return {
        "macs": {"min": count_macs(low.space, small), "max": count_macs(high.space, full)},
        "params": {"min": count_params(low.space, small), "max": count_params(high.space, full)},
    }


def best_under(points: list[TrajectoryPoint], budget: Budget) -> TrajectoryPoint | None:
    """The most accurate point that fits (ties: lower loss, then fewer MACs)."""
    fitting = [p for p in points if budget.fits(p)]
    return max(fitting, key=lambda p: (p.val_accuracy, -p.val_loss, -p.macs), default=None)
