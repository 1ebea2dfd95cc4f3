"""Exact vs fast greedy search on one supernet (issue 14's goal figures), resumable in slices.

One supernet (MobileNetV2 x1.0 at 32 px on the CIFAR-10 subset by default, trained once and cached
under ``runs/``) is searched twice to the same MACs budgets, greedy phase only: the exact search
(one bin per step, every candidate on the whole samples) and the fast one (``--bins-per-step``
bins per step far from a budget, racing on ``--race-fraction`` of the samples).  Then every answer
is fine-tuned from the supernet's weights for ``--finetune-epochs`` with each of ``--seeds``.
Printed, per budget: the MACs each answer reaches (a faster search must not stop further below the
budget), its validation accuracy (the search's own score), its held-out accuracy on the test split
(the supernet at that configuration, BN calibrated on the search's calibration sample), the
fine-tuned test accuracy per seed, and the time of both searches with the ratio.  Both wall time
and this process's CPU time are given: on a shared machine the CPU time is the steadier figure.

On 2 cores the whole benchmark takes longer than one turn at the shared machine, so it works in
slices: after ``--slice-minutes`` it starts nothing new (a search stops after its current step, a
fine-tuning under way runs to its end), each search saves its state after every step and each fine-tuning its
result (under ``runs/bench-supernets/fast-greedy-KEY/``, KEY from the arguments), the times of the
slices add up, and running the same command again continues where the last slice stopped.

    python -m bench.bench_fast_greedy                         # MobileNetV2 x1.0, 32 px, budgets 50% and 25%
    python -m bench.bench_fast_greedy --arch resnet18 --epochs 1 --calib-size 128 --score-size 256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import torch

from bench.bench_greedy_cost import CIFAR
from bench.bench_search import pin_threads
from engine.budgets import Budget, first_fit, until_all_met
from engine.calibrate import calibrate_bn, evaluate
from engine.data import as_batches, load_data
from engine.greedy import GreedySlimmer, load_state
from engine.retrain import initial_model, retrain
from engine.spec import Cancelled, RetrainSpec, SearchSpec, TrainSpec
from engine.supernet_cache import obtain_supernet
from engine.train import load_supernet
from models import ChannelConfig, count_macs

RUNS = Path(__file__).resolve().parents[1] / "runs" / "bench-supernets"


class Slice:
    """The time this invocation may spend; results so far live in ``folder/results.json``."""

    def __init__(self, folder: Path, minutes: float) -> None:
        self.folder, self.deadline = folder, time.monotonic() + 60 * minutes
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "results.json"
        self.results = json.loads(path.read_text()) if path.is_file() else {"searches": {}, "finetuned": {}}

    def over(self) -> bool:
        return time.monotonic() > self.deadline

    def save(self) -> None:
        tmp = self.folder / "results.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=1))
        os.replace(tmp, self.folder / "results.json")


def main() -> None:
    args = _parse()
    key = hashlib.sha256(
        json.dumps(
            {k: v for k, v in vars(args).items() if k not in ("slice_minutes", "threads", "train_threads", "cache")},
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:12]
    work = Slice(args.cache / f"fast-greedy-{key}", args.slice_minutes)
    pin_threads(args.train_threads)
    spec = SearchSpec(
        arch=args.arch,
        dataset=args.dataset,
        macs=[1],
        input_size=args.input_size,
        width_mult=args.width_mult,
        train=TrainSpec(epochs=args.epochs, batch_size=64, lr=0.1),
    )
    data = load_data(spec.dataset, spec.input_size, spec.search.val_fraction, spec.seed)
    started = time.monotonic()
    entry = obtain_supernet(spec, data, args.cache)
    supernet = load_supernet(entry.path)
    pin_threads(args.threads)
    calib = as_batches(data.train_plain, args.calib_size, args.batch_size, seed=0)
    score = as_batches(data.val, args.score_size, args.batch_size, seed=0)
    space = supernet.space
    full = count_macs(space, space.full())
    budgets = [Budget("macs", share * full) for share in args.budgets]
    print(
        f"{args.arch} x{args.width_mult} at {args.input_size} px on {data.name}: {len(space.groups)} groups, "
        f"{args.bins} bins, full {full / 1e6:.2f}M MACs; supernet {args.epochs} epochs "
        f"({'cached' if entry.reused else f'trained in {time.monotonic() - started:.0f} s'}: {entry.path}); "
        f"calibration {len(calib)}, scoring {len(score)} images; torch threads {torch.get_num_threads()}; "
        f"state in {work.folder}"
    )
    fast = {
        "bins_per_step": args.bins_per_step,
        "race_fraction": args.race_fraction,
        "race_z": args.race_z,
        "channels_last": args.channels_last,
    }
    plans = {"exact": {}, "fast": fast}
    for name, knobs in plans.items():
        if not _search(
            work, name, GreedySlimmer(supernet, calib, score, args.bins, budgets=budgets, **knobs), budgets, key
        ):
            return
    steps = {name: load_state(work.folder / f"{name}-state.json", key) for name in plans}
    for budget in budgets:
        for name in plans:
            for seed in args.seeds:
                if not _finetune(
                    work,
                    args,
                    data,
                    supernet,
                    calib,
                    first_fit(steps[name], budget).widths,
                    seed,
                    f"{budget.label}/{name}/{seed}",
                ):
                    return
    _report(work, args, data, supernet, calib, budgets, steps, plans, full)


def _search(work: Slice, name: str, slimmer: GreedySlimmer, budgets: list[Budget], key: str) -> bool:
    """Run (or continue) one search within the slice; whether it has finished."""
    record = work.results["searches"].setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "finished": False})
    if record["finished"]:
        return True
    on_step = lambda step: print(f"  {name} step {step.index}: {step.macs / 1e6:.2f}M MACs", flush=True)  # noqa: E731
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        slimmer.run(until_all_met(budgets), work.folder / f"{name}-state.json", key, work.over, on_step)
        record["finished"] = True
    except Cancelled:
        print(f"{name}: slice over; run the same command again to continue")
    record["wall_s"] += time.perf_counter() - wall
    record["cpu_s"] += time.process_time() - cpu
    work.save()
    return record["finished"]


def _finetune(
    work: Slice, args: argparse.Namespace, data, supernet, calib, widths: dict[str, int], seed: int, label: str
) -> bool:
    """Fine-tune one answer from the supernet's weights (cached by label); whether it is done."""
    if label in work.results["finetuned"]:
        return True
    if work.over():
        print(f"slice over before fine-tuning {label}; run the same command again to continue")
        return False
    model = initial_model(ChannelConfig.from_widths(supernet, widths), supernet, calib, seed)
    done = retrain(
        model, data, TrainSpec(batch_size=64), args.finetune_epochs, RetrainSpec().lr, seed=seed, device="cpu"
    )
    work.results["finetuned"][label] = done.test.accuracy
    work.save()
    print(f"  fine-tuned {label}: {done.test.accuracy:.2f}% in {done.seconds:.0f} s", flush=True)
    return True


def _report(work: Slice, args: argparse.Namespace, data, supernet, calib, budgets, steps, plans, full: int) -> None:
    test = as_batches(data.test, None, 500)
    tuned = work.results["finetuned"]
    print(
        f"\n| budget | search | MACs reached | below budget | val acc % | test acc % (supernet, calibrated) | "
        f"test acc % fine-tuned {args.finetune_epochs} epochs (seeds {', '.join(map(str, args.seeds))}) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for budget in budgets:
        for name in plans:
            answer = first_fit(steps[name], budget)
            supernet.set_widths(answer.widths)
            calibrate_bn(supernet, calib)
            held_out = evaluate(supernet, test).accuracy
            finetuned = [tuned[f"{budget.label}/{name}/{seed}"] for seed in args.seeds]
            print(
                f"| {budget.target / full:.0%} ({budget.target / 1e6:.2f}M) | {name} | {answer.macs / 1e6:.3f}M | "
                f"{(budget.target - answer.macs) / full:.2%} of full | {answer.val_accuracy:.2f} | {held_out:.2f} | "
                f"{', '.join(f'{a:.2f}' for a in finetuned)} (mean {sum(finetuned) / len(finetuned):.2f}) |"
            )
    exact, fast = work.results["searches"]["exact"], work.results["searches"]["fast"]
    print(
        f"\ngreedy phase: exact {len(steps['exact']) - 1} steps, {exact['wall_s']:.0f} s wall / {exact['cpu_s']:.0f} s CPU; "
        f"fast {len(steps['fast']) - 1} steps, {fast['wall_s']:.0f} s wall / {fast['cpu_s']:.0f} s CPU: "
        f"{exact['wall_s'] / fast['wall_s']:.2f}x less wall time, {exact['cpu_s'] / fast['cpu_s']:.2f}x less CPU time"
    )


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="mobilenet_v2")
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--dataset", default=f"cifar10:{CIFAR}")
    p.add_argument("--epochs", type=int, default=2, help="supernet training, cached under runs/")
    p.add_argument("--cache", type=Path, default=RUNS)
    p.add_argument(
        "--budgets",
        type=lambda s: [float(v) for v in s.split(",")],
        default=[0.5, 0.25],
        help="MACs budgets as fractions of the full network",
    )
    p.add_argument("--bins", type=int, default=10)
    p.add_argument("--calib-size", type=int, default=128)
    p.add_argument("--score-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bins-per-step", type=int, default=4)
    p.add_argument("--race-fraction", type=float, default=0.25)
    p.add_argument("--race-z", type=float, default=2.0)
    p.add_argument("--channels-last", action="store_true", help="the fast search in channels-last layout too")
    p.add_argument("--finetune-epochs", type=int, default=5, help="fine-tuning of every answer from the supernet")
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1], help="fine-tuning seeds")
    p.add_argument(
        "--slice-minutes",
        type=float,
        default=12.0,
        help="start nothing new after this long (a fine-tuning under way takes 1-3 minutes more)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads of the searches")
    p.add_argument("--train-threads", type=int, default=2)
    return p.parse_args()


if __name__ == "__main__":
    main()
