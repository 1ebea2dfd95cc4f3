"""Greedy search speed (shared-prefix vs straightforward scoring) and latency-table accuracy.

1. Search speed.  One trained supernet; the same greedy steps run with the straightforward scorer
   (full BN calibration and full forward per candidate) and with the shared-prefix scorer
   (`engine.candidate_scoring`).  Both trajectories must be identical (asserted); the wall-time
   ratio is printed (goal: at least 3x), with the ratio the network's structure allows (every
   node timed once, in eval mode: an estimate): ResNet-18 cuts its groups evenly along a depth of
   equal-cost stages and tops out near 2.2-2.5x, MobileNetV2 near 3.2x at 16 px and 5.7x at 32 px.
   The two are run alternately, the shared one twice, and the faster shared run is used, so
   background load on a shared machine hurts the baseline no less than the candidate.
2. Latency.  The per-layer table of the same architecture (batch 1) predicts random
   configurations; each is exported and timed end to end; the mean absolute percentage error is
   printed (target: at most 10% on CPU).

    python -m bench.bench_search                                   # mobilenet_v2 x0.35, digits 16 px
    python -m bench.bench_search --arch resnet18 --width-mult 0.25 --steps 10

Runs with one CPU thread by default (``--threads``): on a small shared machine, two OpenMP threads
stall whenever another process takes a core, which makes timings meaningless.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

import engine.train
from engine.data import as_batches, load_data
from engine.data.batches import Batches
from engine.greedy import GreedySlimmer, Step, candidates
from engine.latency import measure_model, measure_table
from engine.latency_runtimes import Timing, TorchRuntime
from engine.partial_forward import PartialForward
from engine.spec import CacheFolders, SearchSpec, TrainSpec
from engine.supernet_cache import obtain_supernet
from engine.train import load_supernet
from models import Supernet, build_supernet, export_slim


def pin_threads(threads: int) -> None:
    """Use ``threads`` CPU threads everywhere, training included.

    `engine.train` sizes torch's thread pool to the machine when training starts; on a small
    machine shared with other jobs, two OpenMP threads stall whenever another process takes a
    core (forwards 10-50x slower), so the benchmarks keep the count they were given.
    """
    torch.set_num_threads(threads)
    engine.train.configure_threads = lambda workers: None


def timed_search(
    supernet: Supernet, calib: Batches, score: Batches, bins: int, steps: int, scorer: str
) -> tuple[list[Step], float]:
    slimmer = GreedySlimmer(supernet, calib, score, bins, scorer)
    start = time.perf_counter()
    trajectory = slimmer.run(done=lambda s: len(s) > steps)
    return trajectory, time.perf_counter() - start


def sharing_ceiling(supernet: Supernet, batches: Batches, bins: int) -> float:
    """About the best ratio prefix sharing can reach on the first step, from per-node forward times.

    The straightforward scorer runs the whole network once per candidate; the shared one runs the
    parent once and each candidate from its cut on.  With ``t(i)`` the time of node ``i`` the
    ceiling is ``n * T / (T + sum over candidates of t(cut..end))``: where the cuts fall decides it.
    """
    graph = PartialForward(supernet)
    times = [0.0] * graph.end
    supernet.eval().set_full()
    with torch.no_grad():
        for x, _ in batches:
            env = graph.start(x)
            for i in range(1, graph.end):
                start = time.perf_counter()
                env = graph.advance(env, i, i + 1)
                times[i] += time.perf_counter() - start
    total, options = sum(times), candidates(supernet.space, supernet.space.full(), bins)
    suffixes = sum(sum(times[graph.cut(group) :]) for group in options)
    return len(options) * total / (total + suffixes)


def search_speed(args: argparse.Namespace) -> None:
    spec = SearchSpec(
        arch=args.arch,
        dataset=args.dataset,
        macs=[1],
        input_size=args.input_size,
        width_mult=args.width_mult,
        train=TrainSpec(epochs=args.epochs, batch_size=32, lr=0.05),
    )
    data = load_data(spec.dataset, spec.input_size, spec.search.val_fraction, spec.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bench-search-"))
    entry = obtain_supernet(spec, data, CacheFolders.beside(workdir).supernets if args.cache is None else args.cache)
    supernet = load_supernet(entry.path)
    calib = as_batches(data.train_plain, args.calib_size, 200, seed=0)
    score = as_batches(data.val, args.score_size, 200, seed=0)
    print(
        f"{args.arch} x{args.width_mult} at {args.input_size}px, {len(supernet.space.groups)} groups, "
        f"calibration {len(calib)} images, scoring {len(score)} images, {args.steps} steps, bins {args.bins}"
    )
    shared_a, t_shared_a = timed_search(supernet, calib, score, args.bins, args.steps, "shared")
    full, t_full = timed_search(supernet, calib, score, args.bins, args.steps, "full")
    shared_b, t_shared_b = timed_search(supernet, calib, score, args.bins, args.steps, "shared")
    assert shared_a == full == shared_b, "the shared-prefix search left the straightforward trajectory"
    t_shared = min(t_shared_a, t_shared_b)
    print(
        f"  trajectories identical over {len(full) - 1} steps "
        f"(val accuracy {full[0].val_accuracy:.2f}% -> {full[-1].val_accuracy:.2f}%, "
        f"MACs {full[0].macs / 1e6:.3f}M -> {full[-1].macs / 1e6:.3f}M)"
    )
    print(
        f"  straightforward {t_full:.1f}s, shared prefix {t_shared:.1f}s (runs {t_shared_a:.1f}s, {t_shared_b:.1f}s): "
        f"{t_full / t_shared:.2f}x faster"
    )
    print(
        f"  estimated ceiling of prefix sharing on the first step (per-node forward times): "
        f"{sharing_ceiling(supernet, calib, args.bins):.2f}x"
    )


def latency_error(args: argparse.Namespace) -> None:
    supernet = build_supernet(args.arch, 10, args.input_size, args.width_mult).eval()
    timing = Timing()
    start = time.perf_counter()
    table = measure_table(supernet, TorchRuntime("cpu"), batch_size=1, bins=args.bins, timing=timing)
    print(
        f"latency table: {len(table.nodes)} nodes measured in {time.perf_counter() - start:.1f}s "
        f"(whole model = {table.scale:.3f} x sum of layers {table.overhead_ms:+.3f} ms)"
    )
    generator = torch.Generator().manual_seed(0)
    errors = []
    for _ in range(args.configs):
        widths = supernet.space.random(generator)
        measured = measure_model(export_slim(supernet, widths), args.input_size, 1)
        predicted = table.predict(widths)
        errors.append(abs(predicted - measured) / measured)
        print(f"  predicted {predicted:7.3f} ms  measured {measured:7.3f} ms  error {100 * errors[-1]:5.1f}%")
    print(f"  mean absolute error {100 * sum(errors) / len(errors):.1f}% over {len(errors)} random configurations")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--width-mult", type=float, default=0.35)
    parser.add_argument("--input-size", type=int, default=16)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=3, help="supernet training (cached between runs)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--calib-size", type=int, default=1000)
    parser.add_argument("--score-size", type=int, default=1000)
    parser.add_argument("--configs", type=int, default=10, help="random configurations for the latency check")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--cache",
        type=Path,
        default=os.environ.get("AUTOSLIM_SUPERNET_CACHE"),
        help="supernet cache (default $AUTOSLIM_SUPERNET_CACHE or a temp folder)",
    )
    parser.add_argument("--skip", choices=["speed", "latency"], action="append", default=[])
    args = parser.parse_args()
    pin_threads(args.threads)
    if "speed" not in args.skip:
        search_speed(args)
    if "latency" not in args.skip:
        latency_error(args)


if __name__ == "__main__":
    main()
