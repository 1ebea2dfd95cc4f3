"""Latency on a deployment device, end to end: profile, upload, search, and time every answer.

For each network: ``autoslim profile --runtime onnxruntime`` writes a table on this machine (the
"device"); the embedded service (``autoslim up``, a real worker process) receives it through
``POST /latency-tables``; a search with ``latency_ms`` budgets names it; every answer's ONNX model
is downloaded from the service and timed with ONNX Runtime, as are 10 random configurations
exported here.  Printed per network: each prediction beside its measurement, and the mean
absolute percentage error (the target: at most 10%).

Timing protocol (the profiler's own, `engine.latency_runtimes`): ONNX Runtime's CPU provider, one
intra-op thread, all graph optimisations; the fastest of 15 blocks of at least 50 ms, on the
calling thread's CPU time (the single thread does all the work, and other processes on a shared
machine do not add to it), in ``--rounds`` rounds that each time every model in turn, the fastest
kept (on 2 shared cores a busy spell still slowed single models by up to 40% in CPU time).  The
wall clock's fastest block is printed beside it.

    python -m bench.bench_device_latency                               # MobileNetV2 x0.5, ResNet-18 x0.25, 32 px
    python -m bench.bench_device_latency --nets resnet18:0.25 --input-size 16 --bins 4 --epochs 1   # a quick look
    python -m bench.bench_device_latency --nets torchvision:shufflenet_v2_x0_5:1 --input-size 64      # a converted network
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import torch

from engine.latency import LatencyTable
from engine.latency_runtimes import OnnxRuntime, Timing, end_to_end_timing, timed_ms
from models import build_supernet, export_slim
from models.files import save_model

FRACTIONS = (0.3, 0.55, 0.8)
"""Latency budgets at these fractions of the way from the smallest configuration's to the full network's."""


class Service:
    """``autoslim up`` in a child process, with its admin token, spoken to over HTTP."""

    def __init__(self, home: Path, port: int) -> None:
        env = {**os.environ, "AUTOSLIM_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.log = open(home / "up.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "up", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.url, self.token = f"http://127.0.0.1:{port}", ""
        for line in self.process.stdout:
            if line.startswith("admin token: "):
                self.token = line.split(": ", 1)[1].strip()
                break
        if not self.token:
            raise RuntimeError(f"autoslim up did not start; see {home / 'up.log'}")
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        for _ in range(120):
            try:
                if json.loads(urllib.request.urlopen(f"{self.url}/health", timeout=2).read())["status"] == "ok":
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the service never became healthy")

    def call(self, method: str, path: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=body,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            data = response.read()
        return json.loads(data) if response.headers.get_content_type() == "application/json" else data

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def profile(arch: str, width: float, args: argparse.Namespace, out: Path) -> float:
    """Run the device command; returns its seconds."""
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "profile",
            "--arch",
            arch,
            "--width-mult",
            str(width),
            "--input-size",
            str(args.input_size),
            "--runtime",
            "onnxruntime",
            "--threads",
            str(args.threads),
            "--bins",
            str(args.bins),
            "--out",
            str(out),
        ],
        check=True,
    )
    return time.monotonic() - started


def run_search(service: Service, arch: str, width: float, table: dict, args: argparse.Namespace) -> dict:
    low, high = table["min_ms"], table["max_ms"]
    budgets = [round(low + f * (high - low), 4) for f in FRACTIONS]
    spec = {
        "arch": arch,
        "dataset": "digits",
        "input_size": args.input_size,
        "width_mult": width,
        "latency_ms": budgets,
        "latency_table": table["id"],
        "export_formats": ["onnx"],
        "train": {"epochs": args.epochs, "batch_size": 64, "num_sandwich": 2, "warmup_epochs": 0},
        "search": {"bins": args.bins, "score_size": 200, "calib_size": 200, "calib_batch_size": 100},
    }
    search = service.call("POST", "/searches", json.dumps(spec).encode())
    while True:
        detail = service.call("GET", f"/searches/{search['id']}")
        if detail["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(5)
    if detail["status"] != "succeeded":
        raise RuntimeError(f"search {search['id']} {detail['status']}: {detail['error']}")
    return detail


def measure(runtime: OnnxRuntime, paths: list[Path], input_size: int, rounds: int) -> list[tuple[float, float]]:
    """Per model (CPU-time ms, wall-clock ms): the fastest block of each clock over ``rounds`` rounds,
    each round timing every model in turn (a busy spell of a shared machine spoils one round, not all)."""
    sessions = [runtime.session(str(path)) for path in paths]
    feed = {sessions[0].get_inputs()[0].name: torch.randn(1, 3, input_size, input_size).numpy()}
    timing, best = end_to_end_timing(Timing()), [(float("inf"), float("inf"))] * len(paths)
    for _ in range(rounds):
        for i, session in enumerate(sessions):
            cpu = timed_ms(lambda: session.run(None, feed), timing, clock=time.thread_time)
            wall = timed_ms(lambda: session.run(None, feed), timing)
            best[i] = (min(best[i][0], cpu), min(best[i][1], wall))
    return best


def one_network(service: Service, arch: str, width: float, args: argparse.Namespace, folder: Path) -> dict:
    table_path = folder / f"{arch}-x{width:g}.json"
    seconds = profile(arch, width, args, table_path)
    table = LatencyTable.load(table_path)
    uploaded = service.call("POST", "/latency-tables?name=this-machine", table_path.read_bytes())
    print(
        f"\n{arch} x{width:g} at {args.input_size} px: profiled in {seconds:.0f}s "
        f"({uploaded['nodes']} nodes, {uploaded['size_bytes'] / 1e3:.0f} kB), uploaded as {uploaded['id']}: "
        f"{uploaded['device']}, {uploaded['runtime']}; predicts {uploaded['min_ms']:.3f}..{uploaded['max_ms']:.3f} ms"
    )
    detail = run_search(service, arch, width, uploaded, args)
    models = []  # (label, predicted ms, ONNX file)
    for result in detail["results"]:
        model = folder / f"{arch}-{result['target']:g}.onnx"
        model.write_bytes(
            service.call("GET", f"/searches/{detail['id']}/model?latency_ms={result['target']:g}&format=onnx")
        )
        models.append((f"answer for {result['target']:g} ms", result["latency_ms"], model))
        print(
            f"  worker's own figure for it: {result['worker_latency_ms']:.3f} ms on {result['worker_latency_device']} "
            f"({result['worker_latency_runtime']})"
        )
    net, generator = build_supernet(arch, 10, args.input_size, width), torch.Generator().manual_seed(0)
    for i in range(args.configs):
        widths = net.space.random(generator)
        model = save_model(export_slim(net, widths), folder / f"{arch}-random-{i}.onnx", args.input_size)
        models.append((f"random configuration {i}", table.predict(widths), model))
    timed = measure(OnnxRuntime(threads=args.threads), [m for _, _, m in models], args.input_size, args.rounds)
    rows = [(label, predicted, cpu, wall) for (label, predicted, _), (cpu, wall) in zip(models, timed)]
    errors = []
    for label, predicted, cpu, wall in rows:
        errors.append(abs(predicted - cpu) / cpu)
        print(
            f"  {label:<26} predicted {predicted:7.3f} ms  measured {cpu:7.3f} ms (wall {wall:7.3f})  "
            f"error {100 * errors[-1]:5.1f}%"
        )
    mae = 100 * sum(errors) / len(errors)
    print(
        f"  mean absolute error {mae:.1f}% over {len(rows)} models ({len(detail['results'])} answers, "
        f"{args.configs} random)"
    )
    return {
        "net": f"{arch} x{width:g}",
        "profile_s": seconds,
        "mae": mae,
        "models": len(rows),
        "search_s": detail["timings"]["total_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--nets",
        default="mobilenet_v2:0.5,resnet18:0.25",
        help="ARCH:WIDTH,... to profile and search (ARCH may itself hold a colon: torchvision:NAME:1)",
    )
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1, help="supernet training (latency does not depend on it)")
    parser.add_argument("--configs", type=int, default=10, help="random configurations timed besides the answers")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="times each model is timed, in turn with the others")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--home", type=Path, help="the service's AUTOSLIM_HOME (default: a new temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    home = args.home or Path(tempfile.mkdtemp(prefix="bench-device-"))
    home.mkdir(parents=True, exist_ok=True)
    service = Service(home, args.port)
    try:
        summary = [
            one_network(service, arch, float(width), args, home)
            for arch, width in (net.rsplit(":", 1) for net in args.nets.split(","))
        ]
    finally:
        service.stop()
    print(f"\n{'network':<18} {'profile':>8} {'search':>8} {'MAE':>6}  models")
    for row in summary:
        print(
            f"{row['net']:<18} {row['profile_s']:>7.0f}s {row['search_s']:>7.0f}s {row['mae']:>5.1f}%  {row['models']}"
        )


if __name__ == "__main__":
    main()
