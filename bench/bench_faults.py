"""Faults an operator meets, against the real service (API under uvicorn, Postgres, Redis, workers):

1. **Broker outage**: a private ``redis-server`` is stopped while searches are submitted (with and
   without an Idempotency-Key) and started again; keyed ones are replayed, the rest are left to the
   workers' reaper.  Every stored search must run to the end.
2. **Worker kill -9 mid-training**, ``--kills`` times: a fresh worker resumes the search from its
   checkpoint; the training steps redone (reported before the kill, reported again after) are the
   steps lost.
3. **Database connection kills**: ``pg_terminate_backend`` of every API connection every 0.2 s while
   clients read and submit; answers must be 200/202 or 503, and every accepted search stored.

Prints, per fault: requests tried, 5xx other than 503 (errors), 503s, searches lost (goal 0) and
steps lost per kill.

    python -m bench.bench_faults                   # all three, about 2-3 minutes on 2 cores
    python -m bench.bench_faults --only broker --kills 1
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import create_engine, select, text

from app.testing import POSTGRES_ADMIN_URL, WorkerProcess, wait_for
from bench.service_harness import api_server, free_port, postgres_backend
from store.db import engine_for, session_scope
from store.tables import Event, Search

TINY = {
    "arch": "resnet18",
    "dataset": "digits",
    "input_size": 16,
    "width_mult": 0.25,
    "macs": ["8.4M"],
    "train": {"epochs": 1, "batch_size": 128, "num_sandwich": 2, "warmup_epochs": 0},
    "search": {"bins": 4, "score_size": 64, "calib_size": 64, "calib_batch_size": 64},
    "export_formats": ["pt"],
}
"""A search of seconds: ResNet-18 x0.25 on the digits at 16 px, one epoch."""
FINISHED = ("succeeded", "failed", "cancelled")


def statuses(settings, ids: list[str]) -> Counter:  # noqa: ANN001 - Settings
    with session_scope(engine_for(settings.db_url)) as session:
        return Counter(session.scalars(select(Search.status).where(Search.id.in_(ids))).all())


def wait_all_finished(settings, ids: list[str], workers: list[WorkerProcess], timeout_s: float) -> Counter:  # noqa: ANN001
    wait_for(
        lambda: sum(statuses(settings, ids)[s] for s in FINISHED) == len(ids),
        timeout_s,
        f"{len(ids)} searches to finish",
        poll_s=1.0,
        on_timeout=lambda: workers[-1].tail(),
    )
    return statuses(settings, ids)


def redis_server(port: int, folder: Path) -> subprocess.Popen:
    """A private Redis with an append-only file, so a restart keeps the messages it had taken."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--dir", str(folder), "--appendonly", "yes", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(
        lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG",
        20,
        "redis-server to start",
    )
    return process


def broker_outage(folder: Path) -> None:
    port = free_port()
    redis = redis_server(port, folder)
    with (
        postgres_backend(folder / "backend", broker_url=f"redis://127.0.0.1:{port}/0") as (settings, token),
        api_server(settings) as url,
    ):
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        codes: Counter = Counter()
        ids: list[str] = []

        def post(key: str | None) -> httpx.Response:
            response = client.post("/searches", json=TINY, headers={"Idempotency-Key": key} if key else {})
            codes[response.status_code] += 1
            if response.status_code in (202, 503) and response.json().get("id") not in ids:
                ids.append(response.json()["id"])
            return response

        for i in range(2):
            post(f"before-{i}")
        redis.send_signal(signal.SIGTERM)
        redis.wait()
        for i in range(3):
            post(f"during-{i}")
        post(None)  # no key: only the reaper can send it
        redis = redis_server(port, folder)
        for i in range(3):
            post(f"during-{i}")  # the replay sends it
        worker = WorkerProcess(settings, folder / "worker-broker.log")
        try:
            done = wait_all_finished(settings, ids, [worker], 600)
        finally:
            worker.stop()
            redis.send_signal(signal.SIGTERM)
            redis.wait()
    print(
        f"broker outage: {sum(codes.values())} requests, errors (5xx but 503) "
        f"{sum(n for c, n in codes.items() if c >= 500 and c != 503)}, 503s {codes[503]}, "
        f"stored searches {len(ids)}, succeeded {done['succeeded']}, lost {len(ids) - done['succeeded']}"
    )


def worker_kills(folder: Path, kills: int) -> None:
    with postgres_backend(folder / "backend", progress_every_s=0.2) as (settings, token), api_server(settings) as url:
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        lost_steps: list[int] = []
        ids: list[str] = []
        workers: list[WorkerProcess] = []
        for kill in range(kills):
            body = {**TINY, "seed": 100 + kill, "train": {**TINY["train"], "epochs": 3}}
            search_id = client.post("/searches", json=body).raise_for_status().json()["id"]
            ids.append(search_id)
            first = WorkerProcess(settings, folder / f"worker-kill-{kill}-a.log")
            workers.append(first)

            def in_second_epoch() -> dict | None:
                detail = client.get(f"/searches/{search_id}").json()
                progress = detail.get("progress") or {}
                return progress if detail["phase"] == "train" and progress.get("epoch", 0) >= 1 else None

            reached = wait_for(in_second_epoch, 300, "training to reach its second epoch", on_timeout=first.tail)
            step_at_kill = client.get(f"/searches/{search_id}").json()["progress"].get("step", reached["step"])
            first.kill()
            second = WorkerProcess(settings, folder / f"worker-kill-{kill}-b.log")
            workers.append(second)
            wait_all_finished(settings, [search_id], workers, 600)
            second.stop()
            lost_steps.append(step_at_kill - resumed_step(settings, search_id))
        done = statuses(settings, ids)
    print(
        f"worker kill -9: {kills} kills, searches lost {len(ids) - done['succeeded']}, "
        f"training steps lost per kill {lost_steps}"
    )


def resumed_step(settings, search_id: str) -> int:  # noqa: ANN001
    """The step the second attempt's training continued from (its first train phase event)."""
    with session_scope(engine_for(settings.db_url)) as session:
        log = session.scalars(select(Event).where(Event.search_id == search_id).order_by(Event.id)).all()
    second_claim = [e.id for e in log if e.kind == "claimed"][1]
    return next(
        e.data["step"]
        for e in log
        if e.id > second_claim and e.kind == "phase" and (e.data or {}).get("phase") == "train"
    )


def database_kills(folder: Path, seconds: float) -> None:
    with postgres_backend(folder / "backend") as (settings, token), api_server(settings) as url:
        database = settings.database_url.rsplit("/", 1)[-1]
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        headers = {"Authorization": f"Bearer {token}"}
        seed = httpx.post(f"{url}/searches", json=TINY, headers=headers, timeout=30).raise_for_status().json()["id"]
        codes: Counter = Counter()
        accepted: list[str] = []
        stop = threading.Event()
        lock = threading.Lock()

        def reader() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                n = 0
                while not stop.is_set():
                    code = client.get("/searches" if n % 2 else f"/searches/{seed}").status_code
                    n += 1
                    with lock:
                        codes[code] += 1

        def submitter() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                n = 0
                while not stop.is_set():
                    response = client.post(
                        "/searches", json={**TINY, "seed": 1000 + n}, headers={"Idempotency-Key": f"db-{n}"}
                    )
                    n += 1
                    with lock:
                        codes[response.status_code] += 1
                        if response.status_code == 202:
                            accepted.append(response.json()["id"])

        threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=submitter)]
        for thread in threads:
            thread.start()
        rounds = killed = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with admin.connect() as conn:
                killed += len(
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :db AND pid <> pg_backend_pid()"
                        ),
                        {"db": database},
                    ).all()
                )
            rounds += 1
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join()
        admin.dispose()
        stored = sum(statuses(settings, accepted).values())
    print(
        f"database kills: {rounds} rounds, {killed} connections killed, {sum(codes.values())} requests, "
        f"errors (5xx but 503) {sum(n for c, n in codes.items() if c >= 500 and c != 503)}, 503s {codes[503]}, "
        f"accepted searches {len(accepted)}, lost {len(accepted) - stored}; answers {dict(sorted(codes.items()))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", choices=("broker", "worker", "database"), nargs="+", default=["broker", "worker", "database"]
    )
    parser.add_argument("--kills", type=int, default=2, help="worker kills (one search each)")
    parser.add_argument("--db-seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for sub in ("broker", "worker", "database"):
            (folder / sub / "backend").mkdir(parents=True)
        if "broker" in args.only:
            broker_outage(folder / "broker")
        if "worker" in args.only:
            worker_kills(folder / "worker", args.kills)
        if "database" in args.only:
            database_kills(folder / "database", args.db_seconds)


if __name__ == "__main__":
    main()
