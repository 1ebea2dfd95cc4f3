"""Scaling of one search over ranks (issue 15): supernet training images/s and greedy step time with
1 rank and with N ranks (default: every GPU, else 2 CPU ranks on gloo), in one run, as ratios.

On the CPU the ranks share the machine's cores: 1 rank gets every core as torch threads, N ranks
split them (``cores // N`` threads each), so the ratio says what splitting the work over processes
buys on the same hardware (on a 2-core machine expect little: the work was already spread over the
cores by threads, and the ranks add their exchanges).  On GPUs each rank owns one GPU.

    python -m bench.bench_distributed                       # 1 vs 2 CPU ranks, resnet18 x0.5 at 32 px, digits
    python -m bench.bench_distributed --ranks 4 --device cuda --width-mult 1.0
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from engine.data import as_batches, load_data
from engine.device import available_cores
from engine.distributed import Ranks, init_from_env, launch, shutdown
from engine.greedy import GreedySlimmer
from engine.spec import TrainSpec
from engine.train import build_for_mode, train_supernet


def main() -> None:
    args = _parse()
    ranks = args.ranks or (torch.cuda.device_count() if args.device == "cuda" else 2)
    one = _measure(vars(args), 1)
    many = launch(ranks, _rank, [vars(args), ranks], start_method="fork" if args.device == "cpu" else "spawn")[0]
    print(
        f"{args.arch} x{args.width_mult} at {args.input_size} px, {args.device}, global batch {args.batch_size}, "
        f"{args.images} training images x {args.epochs} epochs; greedy {args.greedy_steps} steps, bins {args.bins}"
    )
    print(f"{'ranks':>5} {'threads':>7} {'train img/s':>12} {'greedy s/step':>14}")
    for row in (one, many):
        print(f"{row['ranks']:>5} {row['threads']:>7} {row['images_per_s']:>12.1f} {row['greedy_s_per_step']:>14.3f}")
    print(
        f"training speed-up {many['images_per_s'] / one['images_per_s']:.2f}x, "
        f"greedy speed-up {one['greedy_s_per_step'] / many['greedy_s_per_step']:.2f}x with {ranks} ranks"
    )


def _rank(args: dict[str, Any], world: int) -> dict[str, Any]:
    return _measure(args, world)


def _measure(args: dict[str, Any], world: int) -> dict[str, Any]:
    """Train and search on ``world`` ranks (1: this process alone); rank 0's timings."""
    threads = max(1, available_cores() // world) if args["device"] == "cpu" else torch.get_num_threads()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # training keeps an explicit thread count
    ranks = init_from_env(args["device"]) if world > 1 else Ranks()
    try:
        digits = load_data(args["dataset"], input_size=args["input_size"])
        keep = torch.arange(min(args["images"], len(digits.train)))
        data = replace(digits, train=digits.train.subset(keep, digits.train.augment))
        spec = TrainSpec(epochs=args["epochs"], batch_size=args["batch_size"], lr=0.05, warmup_epochs=0.0)
        net = build_for_mode(args["arch"], spec.mode, data.num_classes, args["input_size"], args["width_mult"])
        with tempfile.TemporaryDirectory() as out:
            out = ranks.broadcast(out)  # every rank trains into rank 0's folder
            ranks.barrier()
            started = time.perf_counter()
            final = train_supernet(net, data, spec, Path(out), device=args["device"], ranks=ranks)
            train_s = time.perf_counter() - started
            net.load_state_dict(torch.load(final, map_location="cpu", weights_only=False)["model"])
            ranks.barrier()
        device = ranks.device(args["device"])
        net.to(device)
        calib = as_batches(digits.train_plain, args["samples"], 128, device=device)
        score = as_batches(digits.val, args["samples"], 128, device=device)
        slimmer = GreedySlimmer(net, calib, score, bins=args["bins"], ranks=ranks)
        ranks.barrier()
        started = time.perf_counter()
        slimmer.run(done=lambda steps: len(steps) > args["greedy_steps"])
        greedy_s = time.perf_counter() - started
        images = len(keep) // args["batch_size"] * args["batch_size"] * args["epochs"]
        return {
            "ranks": world,
            "threads": threads,
            "images_per_s": images / train_s,
            "greedy_s_per_step": greedy_s / args["greedy_steps"],
        }
    finally:
        if world > 1:
            shutdown()


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=0, help="ranks of the parallel run (default: GPUs, else 2)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dataset", default="digits")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width-mult", type=float, default=0.5)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--bins", type=int, default=4)
    p.add_argument("--samples", type=int, default=256, help="calibration and scoring images of the greedy")
    p.add_argument("--greedy-steps", type=int, default=3)
    return p.parse_args()


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
