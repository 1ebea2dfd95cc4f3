"""GET /metrics: Prometheus text format, read from the database (and the broker) at scrape time.

Any number of API replicas and workers write the same database, so the figures are computed from
it on each scrape instead of being counted in one process's memory: every replica reports the same
numbers, and a restart loses nothing.  A fresh registry per scrape keeps no global state.

- ``autoslim_searches{status}``: searches by status.
- ``autoslim_queue_length{queue}``: searches waiting for a worker, per queue (from the database);
  ``autoslim_broker_messages{queue}``: messages waiting in the broker itself.
- ``autoslim_search_phase_seconds{phase}``: how long each phase (data, train, search, retrain,
  export, total) took, over succeeded searches, as a histogram.
- ``autoslim_running_heartbeat_age_seconds``: the stalest heartbeat of a running search (a dead
  worker shows here long before the reaper requeues its search).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from celery import Celery
from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.deps import SessionDep
from store.settings import QUEUES
from store.tables import Search, Status, utcnow

router = APIRouter(tags=["metrics"])
log = logging.getLogger(__name__)

PHASE_BUCKETS_S = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 24 * 3600.0)
"""Seconds: a digits demo takes a minute, an ImageNet supernet a day."""


class SearchCollector:
    """Collects the service's metrics from one database session and the broker."""

    def __init__(self, session: Session, celery: Celery | None) -> None:
        self.session, self.celery = session, celery

    def collect(self) -> Iterator[Metric]:
        yield self._by_status()
        yield from self._queues()
        yield self._phase_histogram()
        yield self._heartbeat_age()

    def _by_status(self) -> Metric:
        counts = dict(self.session.execute(select(Search.status, func.count()).group_by(Search.status)).all())
        family = GaugeMetricFamily("autoslim_searches", "Searches by status.", labels=["status"])
        for status in Status:
            family.add_metric([status.value], counts.get(status.value, 0))
        return family

    def _queues(self) -> Iterator[Metric]:
        waiting = dict(
            self.session.execute(
                select(Search.queue, func.count()).where(Search.status == Status.queued).group_by(Search.queue)
            ).all()
        )
        family = GaugeMetricFamily("autoslim_queue_length", "Searches waiting for a worker.", labels=["queue"])
        for queue in QUEUES:
            family.add_metric([queue], waiting.get(queue, 0))
        yield family
        messages = broker_messages(self.celery) if self.celery is not None else {}
        if messages:
            broker = GaugeMetricFamily("autoslim_broker_messages", "Messages waiting in the broker.", labels=["queue"])
            for queue, count in messages.items():
                broker.add_metric([queue], count)
            yield broker

    def _phase_histogram(self) -> Metric:
        timings = self.session.scalars(
            select(Search.timings).where(Search.status == Status.succeeded, Search.timings.is_not(None))
        )
        samples: dict[str, list[float]] = {}
        for entry in timings:
            for key, seconds in (entry or {}).items():
                if key.endswith("_s") and isinstance(seconds, (int, float)):
                    samples.setdefault(key[:-2], []).append(float(seconds))
        family = HistogramMetricFamily(
            "autoslim_search_phase_seconds", "Duration of each phase of succeeded searches.", labels=["phase"]
        )
        for phase, values in sorted(samples.items()):
            family.add_metric([phase], histogram_buckets(values, PHASE_BUCKETS_S), sum_value=sum(values))
        return family

    def _heartbeat_age(self) -> Metric:
        oldest = self.session.scalar(select(func.min(Search.heartbeat_at)).where(Search.status == Status.running))
        family = GaugeMetricFamily(
            "autoslim_running_heartbeat_age_seconds",
            "Age of the stalest heartbeat of a running search (0 when none runs).",
        )
        family.add_metric([], (utcnow() - _aware(oldest)).total_seconds() if oldest else 0.0)
        return family


def _aware(value: Any) -> Any:
    """min() over a column comes back without the column's type on some backends (SQLite: a string)."""
    from datetime import datetime, timezone

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def histogram_buckets(values: list[float], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """Cumulative (upper bound, count) pairs ending with +Inf, as Prometheus histograms have them."""
    out = [(floatToGoString(bound), float(sum(1 for v in values if v <= bound))) for bound in bounds]
    return [*out, ("+Inf", float(len(values)))]


def broker_messages(celery: Celery) -> dict[str, int]:
    """Messages waiting per queue in the broker ({} when it cannot be asked; the scrape still works).

    kombu's virtual transports (Redis, the filesystem queue) answer ``_size``, the count their own
    ``queue_declare`` reports; a passive declare fails on Redis for a queue never bound.
    """
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            return {queue: int(channel._size(queue)) for queue in QUEUES}
    except Exception:  # noqa: BLE001 - the broker's figure is optional; the database's is not
        log.warning("metrics: the broker did not report its queue sizes", exc_info=True)
        return {}


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain; version=0.0.4": {}}}})
def metrics(request: Request, session: SessionDep) -> Response:
    """Prometheus metrics: searches by status, queue lengths, phase durations, heartbeat age.

    The format follows the scraper's Accept header (Prometheus text, or OpenMetrics when asked)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SearchCollector(session, getattr(request.app.state, "celery", None)))
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), headers={"Content-Type": content_type})
