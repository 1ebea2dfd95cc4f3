"""Exact vs fast greedy search on one supernet (issue 14's goal figures).

One supernet (MobileNetV2 x1.0 at 32 px on the CIFAR-10 subset by default, trained once and cached
under ``runs/``) is searched twice to the same MACs budgets, greedy phase only: the exact search
(one bin per step, every candidate on the whole samples) and the fast one (``--bins-per-step``
bins per step far from a budget, racing on ``--race-fraction`` of the samples).  Printed, per
budget: the MACs each answer reaches (a faster search must not stop further below the budget),
its validation accuracy (the search's own score) and its held-out accuracy on the test split (the
supernet at that configuration, BN calibrated on the search's calibration sample; no fine-tuning),
and the time of both searches with the ratio.  Both wall time and this process's CPU time are
given: on a shared machine the CPU time is the steadier figure (the searches run one thread).

    python -m bench.bench_fast_greedy                         # MobileNetV2 x1.0, 32 px, budgets 50% and 25%
    python -m bench.bench_fast_greedy --arch resnet18 --epochs 1 --calib-size 128 --score-size 256
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.bench_greedy_cost import CIFAR
from bench.bench_search import pin_threads
from engine.budgets import Budget, first_fit, until_all_met
from engine.calibrate import calibrate_bn, evaluate
from engine.data import as_batches, load_data
from engine.greedy import GreedySlimmer
from engine.spec import SearchSpec, TrainSpec
from engine.supernet_cache import obtain_supernet
from engine.train import load_supernet
from models import count_macs

RUNS = Path(__file__).resolve().parents[1] / "runs" / "bench-supernets"


def timed(work):
    wall, cpu = time.perf_counter(), time.process_time()
    out = work()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    args = _parse()
    pin_threads(args.train_threads)
    spec = SearchSpec(arch=args.arch, dataset=args.dataset, macs=[1], input_size=args.input_size,
                      width_mult=args.width_mult, train=TrainSpec(epochs=args.epochs, batch_size=64, lr=0.1))
    data = load_data(spec.dataset, spec.input_size, spec.search.val_fraction, spec.seed)
    entry, train_s, _ = timed(lambda: obtain_supernet(spec, data, args.cache))
    supernet = load_supernet(entry.path)
    pin_threads(args.threads)
    calib = as_batches(data.train_plain, args.calib_size, args.batch_size, seed=0)
    score = as_batches(data.val, args.score_size, args.batch_size, seed=0)
    test = as_batches(data.test, None, 500)
    space = supernet.space
    full = count_macs(space, space.full())
    budgets = [Budget("macs", share * full) for share in args.budgets]
    print(f"{args.arch} x{args.width_mult} at {args.input_size} px on {data.name}: {len(space.groups)} groups, "
          f"{args.bins} bins, full {full / 1e6:.2f}M MACs; supernet {args.epochs} epochs "
          f"({'cached' if entry.reused else f'trained in {train_s:.0f} s'}: {entry.path}); calibration {len(calib)}, "
          f"scoring {len(score)}, test {len(test)} images; torch threads {torch.get_num_threads()}")
    runs = {}
    fast = {"bins_per_step": args.bins_per_step, "race_fraction": args.race_fraction, "race_z": args.race_z,
            "channels_last": args.channels_last}
    for name, knobs in (("exact", {}), ("fast", fast)):
        slimmer = GreedySlimmer(supernet, calib, score, args.bins, budgets=budgets, **knobs)
        on_step = lambda step, name=name: print(f"  {name} step {step.index}: {step.macs / 1e6:.2f}M MACs",  # noqa: E731
                                                flush=True) if step.index % 10 == 0 else None
        steps, wall, cpu = timed(lambda: slimmer.run(until_all_met(budgets), on_step=on_step))
        runs[name] = (steps, wall, cpu)
        print(f"{name}: {knobs or 'one bin per step, no racing'}: {len(steps) - 1} steps, {wall:.0f} s wall, {cpu:.0f} s CPU")
    print("\n| budget | search | MACs reached | below budget | val acc % | test acc % (supernet, calibrated) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for budget in budgets:
        for name, (steps, _, _) in runs.items():
            answer = first_fit(steps, budget)
            supernet.set_widths(answer.widths)
            calibrate_bn(supernet, calib)
            held_out = evaluate(supernet, test).accuracy
            print(f"| {budget.target / full:.0%} ({budget.target / 1e6:.2f}M) | {name} | {answer.macs / 1e6:.3f}M | "
                  f"{(budget.target - answer.macs) / full:.2%} of full | {answer.val_accuracy:.2f} | {held_out:.2f} |")
    (_, exact_wall, exact_cpu), (_, fast_wall, fast_cpu) = runs["exact"], runs["fast"]
    print(f"\ngreedy phase: exact {exact_wall:.0f} s wall / {exact_cpu:.0f} s CPU, fast {fast_wall:.0f} s wall / "
          f"{fast_cpu:.0f} s CPU: {exact_wall / fast_wall:.2f}x less wall time, {exact_cpu / fast_cpu:.2f}x less CPU time")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="mobilenet_v2")
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--dataset", default=f"cifar10:{CIFAR}")
    p.add_argument("--epochs", type=int, default=2, help="supernet training, cached under runs/")
    p.add_argument("--cache", type=Path, default=RUNS)
    p.add_argument("--budgets", type=lambda s: [float(v) for v in s.split(",")], default=[0.5, 0.25],
                   help="MACs budgets as fractions of the full network")
    p.add_argument("--bins", type=int, default=10)
    p.add_argument("--calib-size", type=int, default=128)
    p.add_argument("--score-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bins-per-step", type=int, default=4)
    p.add_argument("--race-fraction", type=float, default=0.25)
    p.add_argument("--race-z", type=float, default=2.0)
    p.add_argument("--channels-last", action="store_true", help="the fast search in channels-last layout too")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the searches")
    p.add_argument("--train-threads", type=int, default=2)
    return p.parse_args()


if __name__ == "__main__":
    main()
