"""Database rows to response bodies: the JSON shapes of `app.schemas`, with links."""

from __future__ import annotations

from urllib.parse import urlencode

from app.schemas import BudgetConfig, BudgetSummary, Links, SearchDetail, SearchSummary, SupernetInfo, TrajectoryPoint
from engine.spec import BUDGET_KINDS
from store.tables import BudgetResult, Search, TrajectoryStep


def links(search_id: str) -> Links:
    base = f"/searches/{search_id}"
    return Links(
        self=base,
        config=f"{base}/config",
        trajectory=f"{base}/trajectory",
        events=f"{base}/events",
        cancel=f"{base}/cancel",
        retry=f"{base}/retry",
    )


def config_link(result: BudgetResult) -> str:
    return f"/searches/{result.search_id}/config?{urlencode({result.kind: f'{result.target:g}'})}"


def requested_budgets(search: Search) -> dict[str, list[float]]:
    return {kind: list(search.spec.get(kind) or []) for kind in BUDGET_KINDS if search.spec.get(kind)}


def summary(search: Search) -> SearchSummary:
    return SearchSummary(
        id=search.id,
        owner=search.owner,
        arch=search.arch,
        dataset=search.dataset,
        status=search.status,
        phase=search.phase,
        percent=search.percent,
        budgets=requested_budgets(search),
        created_at=search.created_at,
        finished_at=search.finished_at,
        links=links(search.id),
    )


LATENCY_LABELS = (
    "latency_device",
    "latency_runtime",
    "worker_latency_ms",
    "worker_latency_device",
    "worker_latency_runtime",
)
"""Where a latency figure was predicted, read from the channel config stored with the result."""


def budget_summary(result: BudgetResult) -> BudgetSummary:
    labels = {k: (result.config or {}).get(k) for k in LATENCY_LABELS}
    return BudgetSummary(
        kind=result.kind,
        target=result.target,
        macs=result.macs,
        params=result.params,
        latency_ms=result.latency_ms,
        val_accuracy=result.val_accuracy,
        test_accuracy=result.test_accuracy,
        config=config_link(result),
        **labels,
    )


def detail(search: Search) -> SearchDetail:
    supernet = SupernetInfo(key=search.supernet.key, reused=search.supernet_reused) if search.supernet else None
    return SearchDetail(
        **summary(search).model_dump(),
        spec=search.spec,
        queue=search.queue,
        eta_s=search.eta_s,
        progress=search.progress,
        attempts=search.attempts,
        cancel_requested=search.cancel_requested,
        error=search.error,
        timings=search.timings,
        summary=search.summary,
        supernet=supernet,
        results=[budget_summary(r) for r in search.budgets],
        started_at=search.started_at,
        heartbeat_at=search.heartbeat_at,
        updated_at=search.updated_at,
    )


def budget_config(result: BudgetResult) -> BudgetConfig:
    return BudgetConfig(kind=result.kind, target=result.target, macs=result.macs, config=result.config)


def trajectory_point(step: TrajectoryStep) -> TrajectoryPoint:
    return TrajectoryPoint(
        step=step.step, macs=step.macs, params=step.params, accuracy=step.val_accuracy, data=step.data
    )
