"""A worker's hold on one search: the claim, the heartbeat, progress and trajectory writes.

Every write is fenced by the claim id (``WHERE id = :id AND claim_id = :mine``): once the reaper
has given a search to another worker, a slow or half-dead first worker can no longer change it,
and finds out at its next write (`ClaimLost`).  Progress reports arrive many times a second; they
are written at most every ``progress_every_s`` (phase changes and trajectory steps at once), and a
background thread keeps the heartbeat fresh even while a single step takes minutes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from store.db import session_scope
from store.tables import Event, Search, Status, TrajectoryStep, utcnow
from worker.search_clock import SearchClock

log = logging.getLogger(__name__)
PROGRESS_KEYS = ("phase", "percent", "epoch", "epochs", "step", "loss", "lr", "images_per_s", "eta_s")


class ClaimLost(RuntimeError):
    """The search was reaped and handed to another worker (or removed); this worker must stop."""


def claim(engine: Engine, search_id: str, worker: str) -> Claim | None:
    """queued -> running for exactly one caller; None when the search is not queued (a duplicate
    or late message, a cancelled or finished search): the message is then simply acknowledged."""
    claim_id, now = uuid.uuid4().hex, utcnow()
    with session_scope(engine) as session:
        result = session.execute(
            update(Search)
            .where(Search.id == search_id, Search.status == Status.queued)
            .values(
                status=Status.running,
                claim_id=claim_id,
                worker=worker,
                attempts=Search.attempts + 1,
                heartbeat_at=now,
                started_at=now,
                updated_at=now,
            )
        )
        if result.rowcount != 1:
            return None
        attempt, percent, timings = session.execute(
            select(Search.attempts, Search.percent, Search.timings).where(Search.id == search_id)
        ).one()
        session.add(
            Event(
                search_id=search_id,
                kind="claimed",
                message=f"attempt {attempt} on {worker}",
                data={"attempt": attempt, "claim_id": claim_id, "worker": worker},
            )
        )
    return Claim(engine, search_id, claim_id, percent, timings)


class Claim:
    """Writes on behalf of the worker holding a search."""

    def __init__(
        self, engine: Engine, search_id: str, claim_id: str, percent: float = 0.0, timings: dict[str, Any] | None = None
    ) -> None:
        self.engine, self.search_id, self.claim_id = engine, search_id, claim_id
        self.percent_before = percent  # what earlier attempts reached: a resumed search's bar never goes back
        self.clock = SearchClock(timings)

    def update(self, **values: Any) -> None:
        """Fenced UPDATE of the search row; `ClaimLost` when it is no longer ours."""
        with session_scope(self.engine) as session:
            self.update_in(session, **values)

    def update_in(self, session, **values: Any) -> None:  # noqa: ANN001 - a Session
        result = session.execute(
            update(Search)
            .where(Search.id == self.search_id, Search.claim_id == self.claim_id)
            .values(updated_at=utcnow(), **values)
        )
        if result.rowcount != 1:
            raise ClaimLost(f"search {self.search_id} is no longer held by claim {self.claim_id}")

    def event(
        self,
        session,
        kind: str,
        message: str,
        level: str = "info",  # noqa: ANN001
        data: dict[str, Any] | None = None,
    ) -> None:
        session.add(Event(search_id=self.search_id, kind=kind, message=message, level=level, data=data))

    def cancel_requested(self) -> bool:
        """Heartbeat (with the timings so far) and read the cancel flag in one round trip."""
        with session_scope(self.engine) as session:
            self.update_in(session, heartbeat_at=utcnow(), timings=self.clock.snapshot())
            return bool(session.scalar(select(Search.cancel_requested).where(Search.id == self.search_id)))

    def add_steps(self, session, steps: list[dict[str, Any]]) -> int:  # noqa: ANN001
        """Insert trajectory steps, skipping any already stored (a resumed search re-reports some);
        returns how many were new.  Counted, not read from ``rowcount``, which is -1 for this
        multi-row insert on Postgres (SQLAlchemy's batched "insertmanyvalues" execution)."""
        rows = [step_row(self.search_id, s) for s in steps]
        if not rows:
            return 0
        dialect = session.get_bind().dialect.name
        insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
        statement = insert(TrajectoryStep).values(rows).on_conflict_do_nothing(index_elements=["search_id", "step"])
        stored = select(func.count()).select_from(TrajectoryStep).where(TrajectoryStep.search_id == self.search_id)
        before = session.scalar(stored)
        session.execute(statement)
        return session.scalar(stored) - before


def step_row(search_id: str, step: dict[str, Any]) -> dict[str, Any]:
    """A trajectory step as the engine reports it (`engine.greedy.Step.to_dict`) to a table row."""
    return {
        "search_id": search_id,
        "step": int(step["index"]),
        "macs": step.get("macs"),
        "params": step.get("params"),
        "val_accuracy": step.get("val_accuracy"),
        "data": step,
    }


class ProgressWriter:
    """The ``report`` and ``should_cancel`` callbacks handed to `engine.run_search`."""

    def __init__(self, claim: Claim, every_s: float, heartbeat_s: float) -> None:
        self.claim, self.every_s, self.heartbeat_s = claim, every_s, heartbeat_s
        self.phase: str | None = None
        self.last_write = float("-inf")
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{claim.search_id[:8]}", daemon=True)

    def __enter__(self) -> ProgressWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.heartbeat_s + 5)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if self.claim.cancel_requested():
                    self.cancel.set()
            except ClaimLost:
                self.lost.set()
                return
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the heartbeat
                log.warning("heartbeat for %s failed; retrying", self.claim.search_id, exc_info=True)

    def should_cancel(self) -> bool:
        """Checked by the engine between steps: a cancel request, or our claim was taken away."""
        return self.cancel.is_set() or self.lost.is_set()

    def __call__(self, report: dict[str, Any]) -> None:
        if self.lost.is_set():
            raise ClaimLost(f"search {self.claim.search_id} was handed to another worker")
        step, notice = report.get("trajectory_step"), report.get("event")
        phase = report.get("phase")
        if phase != self.claim.clock.phase:
            self.claim.clock.observe(phase)
        now = time.monotonic()
        if step is None and notice is None and phase == self.phase and now - self.last_write < self.every_s:
            return
        self.last_write = now
        progress = {k: report[k] for k in PROGRESS_KEYS if k in report}
        with session_scope(self.claim.engine) as session:
            percent = max(self.claim.percent_before, float(report.get("percent", 0.0)))
            self.claim.update_in(
                session,
                phase=phase,
                percent=percent,
                eta_s=report.get("eta_s"),
                progress=progress,
                heartbeat_at=utcnow(),
                timings=self.claim.clock.snapshot(),
            )
            if phase != self.phase:
                self.claim.event(session, "phase", f"phase {phase}", data=progress)
            if step is not None:
                self.claim.add_steps(session, [step])
            if notice is not None:  # the engine's notices (e.g. a replaced head) go to the log as they are
                self.claim.event(
                    session, notice["kind"], notice["message"], notice.get("level", "info"), notice.get("data")
                )
        self.phase = phase
