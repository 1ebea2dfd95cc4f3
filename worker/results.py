"""How a search ends in the database: succeeded (budgets, supernet, trajectory), cancelled, failed.

The final write goes through the claim (`worker.claims.Claim`), so only the worker that holds
the search can end it.  The trajectory is reconciled with the engine's result: a step saved to the
work directory just before a crash, but never reported, is stored now, so no step is lost.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.spec import BudgetAnswer, SearchResult, SupernetRef
from store.db import session_scope
from store.tables import BudgetResult, Status, Supernet, utcnow
from worker.claims import Claim


def store_success(claim: Claim, data: dict[str, Any], workdir: Path, spec: dict[str, Any]) -> None:
    """Budgets, supernet, trajectory and whole-search figures of ``data`` (`run_search`'s result):
    timings over every attempt (the engine's own, of the last attempt only, are kept as
    ``last_attempt``), and the supernet counted as reused only when no attempt of this search trained it."""
    result = SearchResult.from_dict(data)
    timings = claim.clock.final(result.timings)
    reused = result.supernet.reused and not claim.clock.trained
    with session_scope(claim.engine) as session:
        supernet = upsert_supernet(session, result.supernet, spec, claim.search_id)
        session.query(BudgetResult).filter(BudgetResult.search_id == claim.search_id).delete()
        for budget in result.budgets:
            session.add(budget_row(claim.search_id, budget, workdir))
        recovered = claim.add_steps(session, [p.to_dict() for p in result.trajectory])
        claim.update_in(
            session,
            status=Status.succeeded,
            phase="done",
            percent=100.0,
            eta_s=0.0,
            finished_at=utcnow(),
            timings=timings,
            summary=result.full.to_dict(),
            uniform=[u.to_dict() for u in result.uniform],
            supernet_id=supernet.id,
            supernet_reused=reused,
            claim_id=None,
        )
        note = f"; {recovered} trajectory steps recovered from the result" if recovered else ""
        claim.event(session, "succeeded", f"{len(result.budgets)} budgets answered{note}", data={"timings": timings})


def budget_row(search_id: str, budget: BudgetAnswer, workdir: Path) -> BudgetResult:
    """A result row; the channel config is read from its file so any API host can serve it."""
    config = json.loads((workdir / budget.files["config"]).read_text())
    return BudgetResult(
        search_id=search_id,
        kind=budget.kind,
        target=float(budget.target),
        macs=budget.macs,
        params=budget.params,
        latency_ms=budget.latency_ms,
        val_accuracy=budget.val_accuracy,
        test_accuracy=budget.test_accuracy,
        channels=budget.channels,
        config=config,
        files=budget.files,
    )


def upsert_supernet(session: Session, info: SupernetRef, spec: dict[str, Any], search_id: str) -> Supernet:
    """Record the supernet the search trained or reused; reuse bumps its use count."""
    row = session.scalar(select(Supernet).where(Supernet.key == info.key))
    if row is None:
        row = Supernet(
            key=info.key, arch=spec["arch"], dataset=spec["dataset"], path=info.path, first_search_id=search_id, uses=1
        )
        session.add(row)
    else:
        row.uses += 1
        row.last_used_at = utcnow()
        row.path = info.path or row.path
    session.flush()
    return row


def store_cancelled(claim: Claim, phase: str | None) -> None:
    with session_scope(claim.engine) as session:
        claim.update_in(
            session,
            status=Status.cancelled,
            finished_at=utcnow(),
            cancel_requested=False,
            claim_id=None,
            timings=claim.clock.snapshot(),
        )
        claim.event(
            session,
            "cancelled",
            f"cancelled during {phase or 'start-up'}; checkpoints and trajectory kept, a retry continues from them",
        )


def store_failure(claim: Claim, err: BaseException) -> None:
    message = f"{type(err).__name__}: {err}"
    with session_scope(claim.engine) as session:
        claim.update_in(
            session,
            status=Status.failed,
            finished_at=utcnow(),
            error=message,
            claim_id=None,
            timings=claim.clock.snapshot(),
        )
        claim.event(
            session, "failed", message, level="error", data={"traceback": traceback.format_exception(err)[-20:]}
        )
