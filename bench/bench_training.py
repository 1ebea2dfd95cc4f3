"""Evidence that supernet training is right (issue 3): accuracy at widths 0.25-1.0 on held-out data for

1. the nonuniform US-Net supernet, BN calibrated per width (what the search uses),
2. the same supernet with its shared running statistics, no calibration (US-Net's naive failure),
3. networks trained individually at each uniform width, same epochs and schedule,

plus training images/s of one sandwich step (4 widths) against one full-width step, timed on
the same batch in the same process, with the ratio of their times, its MAC-proportional ideal, and
each member's time alone against its share of the MACs, for every network of ``--throughput-nets``
(ResNet-18 x0.25 and MobileNetV2 x1.0 by default; ``--throughput-only`` stops there).  Accuracies are on the dataset's test split, which neither
training nor calibration sees.

    python -m bench.bench_training                                   # digits, resnet18 0.25x, 16 px, 30 epochs
    python -m bench.bench_training --dataset cifar10:../shared/data/cifar10-subset --input-size 32 --epochs 6
    python -m bench.bench_training --input-size 32 --throughput-only     # issue 14's sandwich / full-width ratio
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from engine.data import DataSplits, as_batches, load_data
from engine.data.batches import Batches
from engine.device import configure_threads
from engine.optim import make_optimizer
from engine.sampling import Member, WidthSampler
from engine.spec import TrainSpec
from engine.train import build_for_mode, init_weights, sandwich_step, train_supernet
from engine.width_scores import REPORT_RATIOS, score_uniform
from models import build_supernet, count_macs

BAR_POINTS = 1.5


def main() -> None:
    args = _parse()
    configure_threads(0)
    data = load_data(args.dataset, input_size=args.input_size, seed=args.seed)
    spec = TrainSpec(
        mode="usnet-nonuniform",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_epochs=args.warmup_epochs,
        inplace_distill=not args.no_inplace_distill,
    )
    print(
        f"dataset {data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images, "
        f"{args.arch} {args.width_mult}x at {args.input_size} px, {spec.epochs} epochs, batch {spec.batch_size}, "
        f"lr {spec.lr}, warm-up {spec.warmup_epochs} epochs, inplace distillation {spec.inplace_distill}, calibration on {args.calib_size} training images, "
        f"torch threads {torch.get_num_threads()}"
    )
    for arch, width_mult in args.throughput_nets:
        _throughput(args, data, spec, arch, width_mult)
    if args.throughput_only:
        return
    test = as_batches(data.test)
    calib = as_batches(data.train_plain, limit=args.calib_size, seed=args.seed)
    with tempfile.TemporaryDirectory() as work:
        started = time.monotonic()
        supernet = build_for_mode(
            args.arch, spec.mode, data.num_classes, args.input_size, args.width_mult, seed=args.seed
        )
        train_supernet(supernet, data, spec, Path(work) / "supernet", seed=args.seed)
        print(f"supernet trained in {time.monotonic() - started:.0f} s")
        shared = score_uniform(supernet, list(REPORT_RATIOS), test, None)  # before calibration overwrites the stats
        calibrated = score_uniform(supernet, list(REPORT_RATIOS), test, calib)
        started = time.monotonic()
        alone = [_train_alone(args, data, spec, ratio, Path(work) / f"alone-{ratio}", test) for ratio in REPORT_RATIOS]
        print(f"individual networks trained in {time.monotonic() - started:.0f} s")
    _table(calibrated, shared, alone, len(test))


def _train_alone(
    args: argparse.Namespace, data: DataSplits, spec: TrainSpec, ratio: float, out: Path, test: Batches
) -> float:
    """A network of one uniform width trained by itself: an S-Net with a single switch is exactly that
    (one member per step, labels only, its own BN), so it shares every other detail of training."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        net = build_supernet(args.arch, data.num_classes, args.input_size, args.width_mult, switches=(ratio,))
        init_weights(net)
    train_supernet(net, data, replace(spec, mode="snet"), out, seed=args.seed)
    return score_uniform(net, [ratio], test, None)[0].score.accuracy


def _throughput(
    args: argparse.Namespace, data: DataSplits, spec: TrainSpec, arch: str, width_mult: float, steps: int = 8
) -> None:
    """Images/s of a sandwich step vs a full-width step, alternating on one batch (same conditions),
    and where the sandwich's time goes: each member's step alone against its share of the MACs (the
    MAC-proportional ideal of the ratio is the sum of the members' shares)."""
    net = build_for_mode(arch, spec.mode, data.num_classes, args.input_size, width_mult).train()
    sampler = WidthSampler(net, spec.mode, spec.num_sandwich, seed=0)
    optimizer = make_optimizer(net, spec)
    batch = as_batches(data.train, limit=spec.batch_size, batch_size=spec.batch_size)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format  # training's CPU layout: NCHW
    net.to(memory_format=layout)
    x, y = batch.x.contiguous(memory_format=layout), batch.y
    full_macs = count_macs(net.space, net.space.full())
    timings = {"sandwich": 0.0, "full": 0.0}
    shares = [0.0] * spec.num_sandwich
    alone = [0.0] * spec.num_sandwich

    def timed_step(members: list[Member]) -> float:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        sandwich_step(net, members, x, y, spec, torch.device("cpu"))
        optimizer.step()
        return time.perf_counter() - started

    for i in range(steps + 2):
        members = sampler.members()
        for name, run in (("sandwich", members), ("full", [Member(net.space.full())])):
            seconds = timed_step(run)
            if i >= 2:  # the first steps warm allocator and kernels up
                timings[name] += seconds
        if i >= 2:
            for j, member in enumerate(members):
                alone[j] += timed_step([member])
                shares[j] += count_macs(net.space, member.widths) / full_macs
    rates = {name: steps * len(y) / seconds for name, seconds in timings.items()}
    print(
        f"{arch} x{width_mult} training throughput ({'channels-last' if args.channels_last else 'NCHW'}, batch {len(y)}, "
        f"{args.input_size} px, {steps} timed steps each, interleaved): "
        f"sandwich step ({spec.num_sandwich} widths) {rates['sandwich']:.0f} img/s, "
        f"full-width step {rates['full']:.0f} img/s, ratio {rates['full'] / rates['sandwich']:.2f} "
        f"(MAC-proportional ideal {sum(shares) / steps:.2f}, members timed alone {sum(alone) / timings['full']:.2f})"
    )
    print(
        "  member (max, min, random...): MACs share -> time share of a full-width step: "
        + ", ".join(f"{share / steps:.2f} -> {seconds / timings['full']:.2f}" for share, seconds in zip(shares, alone))
    )


def _table(calibrated, shared, alone: list[float], test_images: int) -> None:
    print(f"\nheld-out (test split, {test_images} images) top-1 accuracy, %")
    print(
        "| width | MACs | (1) supernet, BN calibrated | (2) supernet, shared BN stats | (3) trained alone | (1) - (3) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    met = True
    for cal, raw, single in zip(calibrated, shared, alone):
        gap = cal.score.accuracy - single
        met &= gap >= -BAR_POINTS
        print(
            f"| {cal.ratio:.2f}x | {cal.macs / 1e6:.2f}M | {cal.score.accuracy:.2f} | {raw.score.accuracy:.2f} | "
            f"{single:.2f} | {gap:+.2f} |"
        )
    print(f"\nbar: (1) within {BAR_POINTS} points of (3) at every width: {'met' if met else 'NOT met'}")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width-mult", type=float, default=0.25)
    p.add_argument("--input-size", type=int, default=16, help="16 suits the 8x8 digits; use 32 for CIFAR")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--calib-size", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="time the steps in channels-last layout (training runs NCHW on the CPU)",
    )
    p.add_argument(
        "--throughput-nets",
        type=_nets,
        default=[("resnet18", 0.25), ("mobilenet_v2", 1.0)],
        help="networks whose sandwich / full-width step ratio is timed, e.g. resnet18:0.25,mobilenet_v2:1",
    )
    p.add_argument("--throughput-only", action="store_true", help="only the sandwich / full-width step ratio")
    p.add_argument(
        "--no-inplace-distill",
        action="store_true",
        help="students learn the labels (on short schedules the early teacher's soft targets slow training)",
    )
    return p.parse_args()


def _nets(text: str) -> list[tuple[str, float]]:
    return [(arch, float(width)) for arch, width in (item.split(":") for item in text.split(","))]


if __name__ == "__main__":
    main()
