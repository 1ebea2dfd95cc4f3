"""What one search's page shows: live progress, the accuracy curve, channel bars, downloads.

Everything is read from the database rows the worker wrote (the uniform-width baseline included),
so any API host can draw it without the worker's work folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup

from app.dashboard import charts
from app.dashboard.queries import budget_label
from app.routes.downloads import available_formats
from engine.spec import UniformPoint
from store.tables import BudgetResult, Search, TrajectoryStep


@dataclass
class BudgetView:
    """One budget's answer on the page: figures, channel bars and download links."""

    result: BudgetResult
    label: str
    bars: Markup
    downloads: dict[str, str] = field(default_factory=dict)


def live_progress(search: Search) -> dict[str, Any]:
    """The fields the page polls for (status, phase, percent, epoch, ETA); JSON-able."""
    progress = search.progress or {}
    return {
        "status": search.status,
        "phase": search.phase,
        "percent": round(search.percent or 0.0, 1),
        "epoch": progress.get("epoch"),
        "epochs": progress.get("epochs"),
        "loss": progress.get("loss"),
        "eta_s": search.eta_s,
        "cancel_requested": search.cancel_requested,
        "updated_at": search.updated_at.isoformat() if search.updated_at else None,
    }


def trajectory_points(steps: list[TrajectoryStep]) -> list[charts.Point]:
    """Greedy steps with an accuracy, labelled by the group each one slimmed."""
    return [
        charts.Point(s.macs, s.val_accuracy, _step_label(s))
        for s in steps
        if s.macs is not None and s.val_accuracy is not None
    ]


def _step_label(step: TrajectoryStep) -> str:
    removed = (step.data or {}).get("removed")
    return f"step {step.step}" + (f" (slimmed {removed})" if removed else " (full width)")


def chosen_points(results: list[BudgetResult]) -> list[charts.Point]:
    """Each budget's configuration at its validation accuracy: the same measure as the trajectory.
    The ring sits on the step it was chosen from, or right of it when the budget fill
    (`engine.budget_fill`) widened that step while it still fitted."""
    return [charts.Point(r.macs, r.val_accuracy, budget_label(r)) for r in results if r.val_accuracy is not None]


def uniform_baseline(search: Search) -> list[UniformPoint]:
    """The uniform baseline the worker stored with the search ([] for a MutualNet search, or one
    that has not finished)."""
    return [UniformPoint.from_dict(u) for u in search.uniform or []]


def baseline_points(uniform: list[UniformPoint]) -> list[charts.Point]:
    """The uniform-width baseline (the supernet, BN calibrated, at uniform width ratios) as chart points."""
    return [charts.Point(float(u.macs), float(u.val_accuracy), f"uniform x{u.ratio}") for u in uniform]


def full_channels(search: Search, config: dict[str, Any]) -> dict[str, int]:
    """Per-layer channels at full width: the search's recorded full network, else rebuilt from the
    config's network description."""
    recorded = (search.summary or {}).get("channels")
    if isinstance(recorded, dict) and set(config.get("channels", {})) <= set(recorded):
        return recorded
    net = {
        k: config[k] for k in ("arch", "num_classes", "input_size", "width_mult", "divisor", "width_min") if k in config
    }
    return dict(_full_layers(json.dumps(net, sort_keys=True)))


@lru_cache(maxsize=32)
def _full_layers(net_json: str) -> tuple[tuple[str, int], ...]:
    from models import NetSpec, Supernet  # torch: only when a page needs a network rebuilt

    space = Supernet(NetSpec.from_dict(json.loads(net_json))).space
    return tuple(space.to_layers(space.full()).items())


def download_links(base: str, result: BudgetResult) -> dict[str, str]:
    """The config JSON and the model in each format it can be had in, under ``base`` (``/admin/searches/<id>``)."""
    query = {result.kind: f"{result.target:.12g}"}  # 7500000, not 7.5e+06
    links = {"config": f"{base}/config?{urlencode(query)}"}
    for fmt in available_formats(result):
        links[fmt] = f"{base}/model?{urlencode({**query, 'format': fmt})}"
    return links


def budget_views(search: Search, base: str) -> list[BudgetView]:
    return [
        BudgetView(
            r,
            budget_label(r),
            charts.channel_bars(r.channels, full_channels(search, r.config)),
            download_links(base, r),
        )
        for r in search.budgets
    ]


def accuracy_chart(search: Search, steps: list[TrajectoryStep]) -> Markup:
    return charts.accuracy_curve(
        trajectory_points(steps), chosen_points(list(search.budgets)), baseline_points(uniform_baseline(search))
    )
