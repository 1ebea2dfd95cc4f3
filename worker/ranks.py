"""A search on several GPUs of one worker (``autoslim worker --gpus 0,1,2,3``): one rank per GPU.

``--gpus cpu:N`` runs the same path with N gloo ranks on the CPU instead (GPUs hidden from them):
a many-core machine without GPUs, and the way the tests run a multi-rank worker.

The task claims the search as usual, then starts the ranks with torch's elastic launcher
(`engine.distributed.launch`), each pinned to its GPU.  Rank 0 holds a `ProgressWriter` on the same
claim (progress, trajectory, the cancel flag); every rank sees a cancel through the collective
cancel check, stops at the same step and returns, so a cancelled attempt ends with every rank
reporting it (`RanksCancelled`), not with a rank failure.  The task's own writer keeps the
heartbeat while the ranks start.

How an attempt ends when something goes wrong:
- a rank raises (a bad spec): the launcher stops the others and reports the error, which is
  stored like a one-process failure (or as a cancel, when one was requested meanwhile);
- a rank dies (killed, out of memory): the launcher stops the others; the attempt is recorded as
  lost and its heartbeat stops, so the reaper hands the search to the next claim, which resumes
  from the last checkpoint and the saved greedy state (on any number of GPUs).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from engine.spec import Cancelled

log = logging.getLogger(__name__)
CPU_RANKS = re.compile(r"^\s*cpu\s*:\s*([1-9][0-9]*)\s*$")


def parse_gpus(text: str) -> list[str]:
    """The device of each rank: ``"0,1,2,3"`` -> ``["0", "1", "2", "3"]``, ``"cpu:2"`` -> ``["cpu", "cpu"]``;
    an empty text is no list (one device)."""
    cpu = CPU_RANKS.match(text)
    if cpu:
        return ["cpu"] * int(cpu.group(1))
    gpus = [part.strip() for part in text.split(",") if part.strip()]
    if any(not g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise ValueError(
            "--gpus must be distinct GPU indices separated by commas, e.g. 0,1,2,3, or cpu:N for N "
            f"ranks on the CPU (got {text!r})"
        )
    return gpus


class RankLost(RuntimeError):
    """A rank died without an error of its own: the attempt is lost, the search is not failed."""


class RanksFailed(RuntimeError):
    """A rank raised (its message is this one's): the search failed."""


class RanksCancelled(Cancelled):
    """Every rank stopped on the cancel request, at the same step."""


CANCELLED = "cancelled"
"""What a rank returns when it stopped on the cancel request."""


def run_on_ranks(gpus: list[str], spec: dict[str, Any], workdir: Path, claim_info: dict[str, Any]) -> dict[str, Any]:
    """Rank 0's result of ``run_search`` over one rank per device of ``gpus``; raises `RankLost` when
    a rank died, `RanksFailed` (the rank's own message) when one raised and `RanksCancelled` when
    every rank stopped on a cancel."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from engine.distributed import launch

    try:
        outcomes = launch(len(gpus), search_rank, [spec, str(workdir), claim_info], devices=gpus)
    except ChildFailedError as err:
        for rank, failure in sorted(err.failures.items()):
            if failure.exitcode is not None and failure.exitcode < 0:
                raise RankLost(f"rank {rank} died (signal {-failure.exitcode})") from None
        rank, failure = min(err.failures.items())
        message = failure.message if isinstance(failure.message, str) else (failure.message or {}).get("message", "")
        raise RanksFailed(f"rank {rank}: {str(message).strip() or f'exit status {failure.exitcode}'}") from None
    cancelled = [rank for rank, outcome in outcomes.items() if outcome == CANCELLED]
    if cancelled:  # the cancel check is collective: all of them, unless a rank is broken
        message = f"{len(cancelled)} of {len(outcomes)} ranks stopped on the cancel request"
        log.info("search %s: %s", claim_info["search_id"], message)
        raise RanksCancelled(message)
    return outcomes[0]


def search_rank(spec: dict[str, Any], workdir: str, claim_info: dict[str, Any]) -> dict[str, Any] | str | None:
    """One rank of the search; rank 0 reports through the claim and returns the result, and every
    rank returns `CANCELLED` when the search stopped on a cancel."""
    from engine import run_search
    from engine.distributed import init_from_env, shutdown
    from engine.spec import CacheFolders
    from models import allow_modules
    from store.db import engine_for
    from worker.claims import Claim, ProgressWriter

    allow_modules(claim_info["model_modules"])
    caches = CacheFolders(Path(claim_info["supernet_cache"]), Path(claim_info["latency_cache"]))
    ranks = init_from_env(spec.get("device", "auto"))
    try:
        if not ranks.is_main:
            run_search(spec, Path(workdir), ranks=ranks, caches=caches)
            return None
        # the task's claim, with what earlier attempts reached and took (a resumed bar never goes back)
        claim = Claim(
            engine_for(claim_info["db_url"]),
            claim_info["search_id"],
            claim_info["claim_id"],
            claim_info["percent"],
            claim_info["timings"],
        )
        writer = ProgressWriter(claim, claim_info["progress_every_s"], claim_info["heartbeat_s"])
        with writer:
            return run_search(
                spec, Path(workdir), report=writer, should_cancel=writer.should_cancel, ranks=ranks, caches=caches
            )
    except Cancelled:
        return CANCELLED
    finally:
        shutdown()
