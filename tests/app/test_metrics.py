"""GET /metrics: Prometheus text whose figures agree with the database and the broker."""

from __future__ import annotations

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from app.routes.metrics import PHASE_BUCKETS_S, broker_messages
from store.tables import Search, Status
from worker.celery_app import enqueue


def scrape(client) -> dict[str, dict[tuple, float]]:
    response = client.get("/metrics", headers={"Accept": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"})  # Prometheus 2
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def rows(app) -> list[Search]:
    with app.state.sessionmaker() as session:
        return list(session.scalars(select(Search)))


def test_searches_by_status_and_queue_lengths_match_the_database(app, anonymous, alice, finished_search, valid):
    alice.post("/searches", json=valid)  # one more queued on the cpu queue
    metrics = scrape(anonymous)  # no token: scrapers rarely have one, and nothing here is per user
    searches = rows(app)
    by_status = Counter(s.status for s in searches)
    assert metrics["autoslim_searches"] == {(("status", s.value),): float(by_status[s.value]) for s in Status}
    assert metrics["autoslim_searches"][(("status", "succeeded"),)] >= 1
    waiting = Counter(s.queue for s in searches if s.status == Status.queued)
    assert metrics["autoslim_queue_length"] == {(("queue", q),): float(waiting[q]) for q in ("cpu", "gpu")}
    assert metrics["autoslim_running_heartbeat_age_seconds"][()] == 0.0  # nothing runs in these tests


def test_openmetrics_when_the_scraper_asks_for_it(anonymous, finished_search):
    response = anonymous.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF") and 'autoslim_searches{status="succeeded"}' in response.text


def test_broker_messages_count_what_was_sent(app):
    before = broker_messages(app.state.celery)
    enqueue(app.state.celery, "f" * 32, "gpu")  # a message no worker consumes here (its search does not exist)
    after = broker_messages(app.state.celery)
    assert after["gpu"] == before["gpu"] + 1 and after["cpu"] == before["cpu"]


def test_phase_durations_are_a_histogram_of_the_succeeded_searches_timings(app, anonymous, finished_search):
    metrics = scrape(anonymous)
    timed = [s.timings for s in rows(app) if s.status == Status.succeeded and s.timings]
    for phase in ("data", "train", "search", "export", "total"):
        values = [t[f"{phase}_s"] for t in timed]
        label = (("phase", phase),)
        assert metrics["autoslim_search_phase_seconds_count"][label] == len(values)
        assert abs(metrics["autoslim_search_phase_seconds_sum"][label] - sum(values)) < 1e-6
        buckets = {
            float(dict(k)["le"]): v
            for k, v in metrics["autoslim_search_phase_seconds_bucket"].items()
            if dict(k)["phase"] == phase
        }
        assert buckets == {
            **{bound: sum(v <= bound for v in values) for bound in PHASE_BUCKETS_S},
            float("inf"): len(values),
        }
