"""Evidence: AutoSlim's channel configurations vs the uniform width multiplier, and the ranking assumption.

1. One nonuniform US-Net supernet; one greedy pass to three budgets (about 25%, 40% and 60% of
   the full network's MACs).  For each budget, the AutoSlim configuration and the widest uniform
   width multiplier whose MACs are at or under the same budget are both fine-tuned from the
   supernet's weights with the same recipe, for each seed; test accuracy is reported.
2. The assumption AutoSlim rests on: the supernet's (BN-calibrated) validation accuracy ranks
   configurations as training them would.  Random configurations are scored in the supernet and
   fine-tuned (same recipe); the Kendall rank correlation between the two is reported, over all of
   them and, since MACs alone explain part of any ranking, within a narrow MACs band too.

    python -m bench.bench_autoslim_vs_uniform                       # digits at 16 px, resnet18 x0.25
    python -m bench.bench_autoslim_vs_uniform --dataset cifar10:/work/shared/data/cifar10-subset \\
        --input-size 32 --epochs 8 --finetune-epochs 3

MACs are multiply-accumulates.  Runs single-threaded by default (see bench_search).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau

from bench.bench_search import pin_threads
from engine.budgets import Budget, first_fit, until_all_met
from engine.calibrate import calibrate_bn, evaluate
from engine.data import DataSplits, as_batches, load_data
from engine.data.batches import Batches
from engine.greedy import GreedySlimmer
from engine.retrain import initial_model, retrain
from engine.spec import CacheFolders, SearchSpec, TrainSpec
from engine.supernet_cache import obtain_supernet
from engine.train import load_supernet
from models import ChannelConfig, Supernet, count_macs

FRACTIONS = (0.25, 0.40, 0.60)


def uniform_under(supernet: Supernet, macs: float) -> tuple[float, dict[str, int]]:
    """The widest uniform width multiplier (steps of 0.01) whose MACs are at most ``macs``."""
    space = supernet.space
    for i in range(100, 0, -1):
        widths = space.uniform(i / 100)
        if count_macs(space, widths) <= macs:
            return i / 100, widths
    raise ValueError(f"no uniform width fits {macs:.0f} MACs")


def supernet_score(supernet: Supernet, widths: dict[str, int], calib: Batches, val: Batches) -> float:
    supernet.set_widths(widths)
    calibrate_bn(supernet, calib)
    return evaluate(supernet, val).accuracy


def fine_tuned(
    supernet: Supernet,
    widths: dict[str, int],
    data: DataSplits,
    calib: Batches,
    recipe: TrainSpec,
    args: argparse.Namespace,
    seed: int,
) -> float:
    """Test accuracy after fine-tuning the configuration from the supernet's (calibrated) weights."""
    model = initial_model(ChannelConfig.from_widths(supernet, widths), supernet, calib)
    return retrain(model, data, recipe, args.finetune_epochs, args.finetune_lr, seed=seed, device="cpu").test.accuracy


def compare_budgets(supernet, data, calib, val, recipe, args) -> None:
    space = supernet.space
    full = count_macs(space, space.full())
    budgets = [Budget("macs", f * full) for f in FRACTIONS]
    start = time.perf_counter()
    steps = GreedySlimmer(supernet, calib, val, args.bins).run(done=until_all_met(budgets))
    print(
        f"greedy search: {len(steps) - 1} steps in {time.perf_counter() - start:.0f}s; full network "
        f"{full / 1e6:.3f}M MACs, supernet val {steps[0].val_accuracy:.2f}%"
    )
    print(
        f"{'budget':>14} {'method':>9} {'MACs':>9} {'supernet val':>12} {'fine-tuned test (per seed)':>30} {'mean':>7}"
    )
    for fraction, budget in zip(FRACTIONS, budgets):
        chosen = first_fit(steps, budget)
        ratio, uniform = uniform_under(supernet, budget.target)
        for name, widths in (("AutoSlim", chosen.widths), (f"uniform {ratio:.2f}x", uniform)):
            tests = [fine_tuned(supernet, widths, data, calib, recipe, args, seed) for seed in range(args.seeds)]
            val_acc = supernet_score(supernet, widths, calib, val)
            print(
                f"{fraction:>5.0%} {budget.target / 1e6:>6.3f}M {name:>9} {count_macs(space, widths) / 1e6:>8.3f}M "
                f"{val_acc:>11.2f}% {', '.join(f'{t:.2f}%' for t in tests):>30} {statistics.mean(tests):>6.2f}%",
                flush=True,
            )


def rank_correlation(supernet, data, calib, val, recipe, args) -> None:
    space, generator = supernet.space, torch.Generator().manual_seed(1234)
    rows = []
    for _ in range(args.random_configs):
        widths = space.random(generator)
        rows.append(
            (
                count_macs(space, widths),
                supernet_score(supernet, widths, calib, val),
                fine_tuned(supernet, widths, data, calib, recipe, args, 0),
            )
        )
        print(
            f"  random config {count_macs(space, widths) / 1e6:7.3f}M MACs: supernet val {rows[-1][1]:6.2f}%, "
            f"fine-tuned test {rows[-1][2]:6.2f}%",
            flush=True,
        )
    tau, p = kendalltau([r[1] for r in rows], [r[2] for r in rows])
    print(
        f"Kendall tau (supernet val accuracy vs fine-tuned test accuracy), {len(rows)} random configs: "
        f"{tau:.3f} (p = {p:.3g})"
    )
    macs_tau, _ = kendalltau([r[0] for r in rows], [r[2] for r in rows])
    print(f"  for reference, Kendall tau of MACs alone vs fine-tuned test accuracy: {macs_tau:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--width-mult", type=float, default=0.25)
    parser.add_argument("--input-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10, help="supernet training epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--calib-size", type=int, default=1000)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--random-configs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--cache",
        type=Path,
        default=os.environ.get("AUTOSLIM_SUPERNET_CACHE"),
        help="supernet cache (default $AUTOSLIM_SUPERNET_CACHE or a temp folder)",
    )
    args = parser.parse_args()
    pin_threads(args.threads)
    recipe = TrainSpec(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    spec = SearchSpec(
        arch=args.arch,
        dataset=args.dataset,
        macs=[1],
        input_size=args.input_size,
        width_mult=args.width_mult,
        train=recipe,
    )
    spec.search.val_fraction = args.val_fraction
    data = load_data(spec.dataset, spec.input_size, spec.search.val_fraction, spec.seed)
    start = time.perf_counter()
    entry = obtain_supernet(
        spec,
        data,
        args.cache or CacheFolders.beside(Path(tempfile.mkdtemp(prefix="bench-vs-uniform-")) / "job").supernets,
    )
    print(
        f"{args.arch} x{args.width_mult}, {data.name} at {args.input_size}px ({len(data.train)} train / "
        f"{len(data.val)} val / {len(data.test)} test), supernet {args.epochs} epochs "
        f"({'reused' if entry.reused else f'trained in {time.perf_counter() - start:.0f}s'}), "
        f"fine-tuning {args.finetune_epochs} epochs at lr {args.finetune_lr}, {args.threads} thread(s)"
    )
    supernet = load_supernet(entry.path)
    calib = as_batches(data.train_plain, args.calib_size, 200, seed=0)
    val = as_batches(data.val, None, 200, seed=0)
    compare_budgets(supernet, data, calib, val, recipe, args)
    rank_correlation(supernet, data, calib, val, recipe, args)


if __name__ == "__main__":
    main()
