"""Reads under load: 20 concurrent clients on ``GET /searches`` and ``GET /searches/{id}`` against the
API on Postgres, over real HTTP, for one API process and for several (``uvicorn --workers N``).

Each client is a thread with its own keep-alive connection, alternating the two reads (a page of 20
searches, then one search's detail) as fast as answers come back.  Prints requests per second,
p50 and p99 latency and the error count (any answer other than 200) per process count, and the
throughput of N processes as a ratio of one process's, measured in the same run.  The clients run
on the same machine as the server, so on a small machine they compete with it for the CPU: the
figures are a floor for what a dedicated API host sustains.

    python -m bench.bench_reads                       # 20 clients, 1 and 2 API processes, 10 s each
    python -m bench.bench_reads --clients 20 --workers 1 2 4 --seconds 20 --searches 500
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.service_harness import api_server, percentile, postgres_backend

SEARCH = {"arch": "mobilenet_v2", "dataset": "digits", "width_mult": 0.35, "macs": ["2M"]}


@dataclass
class Load:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def seed(url: str, token: str, count: int) -> list[str]:
    """``count`` searches submitted through the API (they stay queued: no worker runs)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        return [
            client.post("/searches", json={**SEARCH, "seed": i}).raise_for_status().json()["id"] for i in range(count)
        ]


def client_loop(url: str, token: str, ids: list[str], stop: threading.Event, load: Load, offset: int) -> None:
    paths = ["/searches?limit=20", *(f"/searches/{i}" for i in ids)]
    mine: list[float] = []
    errors = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        n = offset
        while not stop.is_set():
            path = paths[0] if n % 2 == 0 else paths[1 + (n // 2) % len(ids)]
            started = time.perf_counter()
            try:
                ok = client.get(path).status_code == 200
            except httpx.HTTPError:
                ok = False
            mine.append(time.perf_counter() - started)
            errors += not ok
            n += 1
    with load.lock:
        load.latencies_s += mine
        load.errors += errors


def run_load(url: str, token: str, ids: list[str], clients: int, seconds: float) -> tuple[Load, float]:
    load, stop = Load(), threading.Event()
    threads = [threading.Thread(target=client_loop, args=(url, token, ids, stop, load, i)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return load, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="API process counts to measure")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--searches", type=int, default=200, help="searches in the database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, postgres_backend(Path(folder)) as (settings, token):
        rates: dict[int, float] = {}
        ids: list[str] = []
        print(f"{args.clients} clients, {args.seconds:g} s per run, {args.searches} searches, Postgres")
        print(f"{'processes':>9} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for workers in args.workers:
            with api_server(settings, workers=workers) as url:
                ids = ids or seed(url, token, args.searches)
                run_load(url, token, ids, args.clients, 1.0)  # warm-up: connections, caches
                load, elapsed = run_load(url, token, ids, args.clients, args.seconds)
            rates[workers] = len(load.latencies_s) / elapsed
            ms = [s * 1000 for s in load.latencies_s]
            print(
                f"{workers:>9} {len(ms):>9} {rates[workers]:>8.1f} {percentile(ms, 50):>8.1f} "
                f"{percentile(ms, 99):>8.1f} {load.errors:>7}"
            )
        base = rates[args.workers[0]]
        print(
            "throughput ratio vs",
            args.workers[0],
            "process(es):",
            ", ".join(f"{w}: {r / base:.2f}x" for w, r in rates.items()),
        )


if __name__ == "__main__":
    main()
