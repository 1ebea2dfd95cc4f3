"""The one Celery task: run a stored search with `engine.run_search`, writing as it goes.

The message carries only the search id; everything else is read from the database, so a message
delivered twice, late, or after a cancel does no harm (the claim fails and it is acknowledged).
torch is imported inside the task, never at module level: the worker runs the ``solo`` pool (one
search per process; see `app.cli.service_cmds`), and even under a forking pool the parent would
never have touched CUDA.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from celery import shared_task
from celery.signals import worker_process_init, worker_ready

from engine.spec import CacheFolders, Cancelled
from store.db import engine_for, forget_inherited_connections
from store.settings import Settings, get_settings
from store.tables import Search
from worker.celery_app import TASK_NAME
from worker.claims import ClaimLost, ProgressWriter, claim
from worker.ranks import RankLost, RanksFailed, parse_gpus, run_on_ranks
from worker.reaper import start_reaper
from worker.results import store_cancelled, store_failure, store_success
from worker.uploads import with_upload_files

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@shared_task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_search_task(self, search_id: str) -> str:  # noqa: ANN001 - Celery's bound task
    settings = getattr(self.app, "autoslim_settings", None) or get_settings()
    return execute(settings, search_id)


def execute(settings: Settings, search_id: str) -> str:
    """Claim and run one search; returns what happened (``skipped``, ``succeeded``, ``lost``, ...)."""
    engine = engine_for(settings.db_url)
    held = claim(engine, search_id, worker_name())
    if held is None:
        log.info("search %s is not queued (duplicate, cancelled or finished message); skipped", search_id)
        return "skipped"
    workdir = settings.work_root / search_id
    held.update(workdir=str(workdir))
    with engine.connect() as conn:
        spec = conn.execute(Search.__table__.select().where(Search.id == search_id)).one().spec
    # The engine reuses trained supernets and latency tables from these folders; shared storage
    # shares them between workers.
    caches = CacheFolders(settings.supernet_root, settings.latency_root)
    writer = ProgressWriter(held, settings.progress_every_s, settings.heartbeat_s)
    try:
        with writer:  # heartbeats start now: importing torch can take longer than the reaper waits
            from engine import run_search  # torch: imported here, in the process that runs the search
            from models import allow_modules

            allow_modules(settings.model_modules)  # MODULE:FUNCTION networks the operator installed

            files = with_upload_files(engine, spec, workdir, settings.weights_root)
            gpus = parse_gpus(settings.worker_gpus)
            if len(gpus) > 1:  # one rank per GPU; rank 0 reports through the same claim
                result = run_on_ranks(
                    gpus,
                    files,
                    workdir,
                    {
                        "db_url": settings.db_url,
                        "search_id": search_id,
                        "claim_id": held.claim_id,
                        "progress_every_s": settings.progress_every_s,
                        "heartbeat_s": settings.heartbeat_s,
                        "model_modules": settings.model_modules,
                        "supernet_cache": str(caches.supernets),
                        "latency_cache": str(caches.latency),
                        "percent": held.percent_before,
                        "timings": held.clock.prior,
                    },
                )
            else:
                result = run_search(files, workdir, report=writer, should_cancel=writer.should_cancel, caches=caches)
        store_success(held, result, Path(workdir), spec)
        return "succeeded"
    except ClaimLost:
        return "lost"
    except RankLost as err:  # the heartbeat stops with this attempt: the reaper hands the search on
        log.warning("search %s: %s; the next claim resumes from its checkpoints", search_id, err)
        return "lost"
    except Cancelled:
        if writer.lost.is_set():
            return "lost"
        store_cancelled(held, writer.phase)
        return "cancelled"
    except RanksFailed as err:
        try:
            if held.cancel_requested():  # the ranks stopped on the cancel request (Cancelled, in rank 0)
                store_cancelled(held, writer.phase)
                return "cancelled"
            log.error("search %s failed: %s", search_id, err)
            store_failure(held, err)
        except ClaimLost:
            return "lost"
        return "failed"
    except Exception as err:  # noqa: BLE001 - any failure of the search is recorded on it
        log.exception("search %s failed", search_id)
        try:
            store_failure(held, err)
        except ClaimLost:
            return "lost"
        return "failed"
    finally:
        _release_gpu_memory()


def _release_gpu_memory() -> None:
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@worker_ready.connect
def _start_reaper(sender, **_kwargs) -> None:  # noqa: ANN001 - Celery's consumer
    """Each worker also looks for searches whose worker died; the conditional updates make many
    reapers at once safe."""
    start_reaper(sender.app)


@worker_process_init.connect
def _own_connections(**_kwargs) -> None:
    """A prefork pool child (``--max-tasks-per-child``) must not share the parent's database sockets."""
    forget_inherited_connections()
