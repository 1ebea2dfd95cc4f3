"""Claims, fencing, heartbeats, progress throttling and the reaper, on the real database (no engine run)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from app.testing import wait_for
from store.db import session_scope
from store.tables import Event, Search, TrajectoryStep, utcnow
from worker.claims import ClaimLost, ProgressWriter, claim
from worker.reaper import reap


def row(engine, search_id: str) -> Search:
    with session_scope(engine) as session:
        return session.get(Search, search_id)


def age_heartbeat(engine, search_id: str, seconds: float) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(Search).where(Search.id == search_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_exactly_one_of_many_concurrent_claims_wins(engine, queued):
    search_id = queued()
    results = []
    barrier = threading.Barrier(6)

    def attempt(n: int) -> None:
        barrier.wait()
        results.append(claim(engine, search_id, f"worker-{n}"))

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert row(engine, search_id).attempts == 1 and row(engine, search_id).status == "running"
    assert claim(engine, search_id, "late") is None  # a redelivered message finds it running


def test_reaper_requeues_a_stale_search_voids_the_old_claim_and_fails_at_the_cap(engine, queued, app, settings):
    search_id = queued()
    with session_scope(engine) as session:
        session.execute(update(Search).where(Search.id == search_id).values(max_attempts=2))
    first = claim(engine, search_id, "w1")
    assert reap(engine, app.state.celery, 60) == {}  # fresh heartbeat: left alone
    age_heartbeat(engine, search_id, 120)
    assert reap(engine, app.state.celery, 60) == {search_id: "requeued"}
    assert row(engine, search_id).status == "queued"
    try:
        first.update(percent=50.0)
        raise AssertionError("a reaped claim could still write")
    except ClaimLost:
        pass
    second = claim(engine, search_id, "w2")
    assert second is not None and row(engine, search_id).attempts == 2
    age_heartbeat(engine, search_id, 120)
    assert reap(engine, app.state.celery, 60) == {search_id: "failed"}
    failed = row(engine, search_id)
    assert failed.status == "failed" and "worker lost 2 times" in failed.error
    with session_scope(engine) as session:
        kinds = session.scalars(select(Event.kind).where(Event.search_id == search_id).order_by(Event.id)).all()
    assert kinds == ["submitted", "claimed", "requeued", "claimed", "failed"]


def step(index: int) -> dict:
    return {
        "index": index,
        "widths": {"g": 8},
        "removed": None if index == 0 else "g",
        "macs": 1000 - index,
        "params": 10,
        "latency_ms": None,
        "val_accuracy": 90.0 - index,
        "val_loss": 0.3,
    }


def test_progress_is_throttled_steps_are_kept_once_and_cancel_reaches_the_engine(engine, queued):
    search_id = queued()
    held = claim(engine, search_id, "w")
    writer = ProgressWriter(held, every_s=3600, heartbeat_s=0.2)
    with writer:
        writer({"phase": "train", "percent": 1.0, "epoch": 0, "epochs": 2})
        writer({"phase": "train", "percent": 2.0, "epoch": 0, "epochs": 2})  # within every_s: not written
        assert row(engine, search_id).percent == 1.0
        writer({"phase": "search", "percent": 60.0, "trajectory_step": step(0)})
        writer({"phase": "search", "percent": 61.0, "trajectory_step": step(1)})
        writer({"phase": "search", "percent": 61.0, "trajectory_step": step(1)})  # re-reported after a resume
        stored = row(engine, search_id)
        assert (stored.phase, stored.percent) == ("search", 61.0)
        with session_scope(engine) as session:
            steps = session.scalars(
                select(TrajectoryStep.step).where(TrajectoryStep.search_id == search_id).order_by(TrajectoryStep.step)
            ).all()
            phases = session.scalar(
                select(func.count()).select_from(Event).where(Event.search_id == search_id, Event.kind == "phase")
            )
        assert steps == [0, 1] and phases == 2
        before = row(engine, search_id).heartbeat_at
        time.sleep(0.5)
        assert row(engine, search_id).heartbeat_at > before  # the heartbeat thread runs between reports
        assert not writer.should_cancel()
        with session_scope(engine) as session:
            session.execute(update(Search).where(Search.id == search_id).values(cancel_requested=True))
        wait_for(writer.should_cancel, 5, "the cancel flag to reach the worker")


def test_storing_steps_skips_known_ones_and_counts_only_the_new(engine, queued):
    held = claim(engine, queued(), "w")
    step = lambda i: {"index": i, "macs": 1000 - i, "params": 10, "val_accuracy": 50.0}  # noqa: E731
    with session_scope(engine) as session:
        assert held.add_steps(session, [step(0), step(1), step(2)]) == 3
    with session_scope(engine) as session:  # a resumed search reports its steps again, with one more
        assert held.add_steps(session, [step(1), step(2), step(3)]) == 1
        assert held.add_steps(session, [step(0), step(3)]) == 0
        stored = session.scalars(select(TrajectoryStep.step).where(TrajectoryStep.search_id == held.search_id))
        assert sorted(stored) == [0, 1, 2, 3]


def test_a_resumed_search_reports_whole_search_figures(engine, queued, app):
    """Attempt 1 trains, then its worker is lost; attempt 2 takes the supernet from the cache and its
    plan gives a lower percent.  The search reports the time of both attempts, progress that never
    went back, and a supernet it trained itself, not one it reused."""
    from worker.results import store_success

    search_id = queued()
    first = claim(engine, search_id, "w1")
    with ProgressWriter(first, every_s=0, heartbeat_s=60) as writer:
        writer({"phase": "data", "percent": 1.0})
        writer({"phase": "train", "percent": 10.0, "epoch": 0, "epochs": 2})
        time.sleep(0.3)
        writer({"phase": "search", "percent": 74.0})
        time.sleep(0.2)
        writer({"phase": "search", "percent": 75.0})
    lost = row(engine, search_id).timings
    assert lost["train_s"] >= 0.3 and lost["total_s"] >= lost["train_s"] + lost["search_s"] >= 0.5
    age_heartbeat(engine, search_id, 120)
    assert reap(engine, app.state.celery, 60) == {search_id: "requeued"}

    second = claim(engine, search_id, "w2")
    with ProgressWriter(second, every_s=0, heartbeat_s=60) as writer:
        writer({"phase": "data", "percent": 2.0})
        writer({"phase": "search", "percent": 52.0})  # no training: the plan's shares changed
        assert row(engine, search_id).percent == 75.0
        time.sleep(0.1)
        writer({"phase": "search", "percent": 80.0})
        assert row(engine, search_id).percent == 80.0
    full = {
        "index": 0,
        "widths": {"g0": 8},
        "removed": None,
        "macs": 1000,
        "params": 100,
        "latency_ms": None,
        "val_accuracy": 50.0,
        "val_loss": 1.0,
    }
    engine_report = {
        "budgets": [],
        "trajectory": [],
        "full": full,
        "uniform": [],
        "timings": {"data_s": 0.02, "train_s": 0.01, "search_s": 0.05, "total_s": 0.2},
        "supernet": {"key": f"k-{search_id}", "path": "/x", "reused": True},
        "spec": {"arch": "mobilenet_v2", "dataset": "digits"},
        "spec_hash": "h",
    }
    store_success(second, engine_report, Path("/nonexistent"), {"arch": "mobilenet_v2", "dataset": "digits"})
    done = row(engine, search_id)
    assert done.supernet_reused is False
    assert done.timings["train_s"] == round(lost["train_s"] + 0.01, 3)  # attempt 1 clocked + the engine's own
    assert done.timings["search_s"] == round(lost["search_s"] + 0.05, 3)
    assert done.timings["total_s"] >= lost["total_s"] + 0.1
    assert done.timings["last_attempt"] == engine_report["timings"]
