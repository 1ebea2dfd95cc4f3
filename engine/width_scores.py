"""Accuracy of a supernet at uniform widths, with or without BN calibration.

Used to report what a trained supernet can do (the ``autoslim train`` summary, the training
benchmark) and as the baseline a search is drawn against (the uniform width multiplier, which is
what AutoSlim has to beat).  Calibration overwrites the shared BN statistics, so a caller that
also wants the uncalibrated figures must score those first.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.calibrate import Score, calibrate_bn, evaluate
from engine.data.batches import Batches
from models import Supernet, count_macs

REPORT_RATIOS = (0.25, 0.5, 0.75, 1.0)
BASELINE_POINTS = 7


@dataclass
class WidthScore:
    ratio: float
    macs: int
    score: Score


def report_ratios(supernet: Supernet) -> list[float]:
    """An S-Net is defined at its switches only; other supernets at the usual ratios within bounds."""
    if supernet.spec.switches:
        return sorted(supernet.spec.switches)
    return [r for r in REPORT_RATIOS if r >= supernet.spec.width_min]


def baseline_ratios(supernet: Supernet, points: int = BASELINE_POINTS) -> list[float]:
    """Evenly spaced uniform width ratios from the supernet's smallest width to full, descending."""
    low = supernet.spec.width_min
    return [round(1.0 - (1.0 - low) * i / (points - 1), 4) for i in range(points)]


def score_uniform(supernet: Supernet, ratios: list[float], data: Batches, calib: Batches | None) -> list[WidthScore]:
    """Score each uniform width ratio on ``data``; with ``calib``, BN statistics are re-estimated first.

    Leaves the supernet at full width.
    """
    out = []
    for ratio in ratios:
        supernet.set_uniform(ratio)
        if calib is not None:
            calibrate_bn(supernet, calib)
        out.append(WidthScore(ratio, count_macs(supernet.space, supernet.widths), evaluate(supernet, data)))
    supernet.set_full()
    return out
