"""Where the greedy search's time goes (issue 14, "measure first").

For each network (MobileNetV2 x1.0 and ResNet-18 x1.0 at 32 px by default) the exact greedy search
(shared-prefix scorer, one bin per step) runs from the full width down to a MACs budget, and prints

- steps and candidates scored, and the candidates' mean share of the network they run (from cut);
- wall time split by phase: the parent's shared prefix (``carry``), BN calibration of candidates
  (``calib``), scoring of candidates (``score``), cutting cached activations down (``narrow``), and
  the rest (bookkeeping, the full-network score of step 0);
- within calibration and scoring, time per layer kind (pointwise / depthwise / dense conv, BN,
  activation, addition, linear, ...).

The supernet is untrained with BN calibrated per candidate (the cost of a step does not depend on
the weights), and the calibration / scoring samples are small so the run takes minutes; the cost
scales linearly with both sizes.

    python -m bench.bench_greedy_cost                           # both networks to 40% MACs
    python -m bench.bench_greedy_cost --archs mobilenet_v2 --budget 0.25 --calib-size 128 --score-size 128
    python -m bench.bench_greedy_cost --layout          # the first steps in NCHW vs channels-last layout
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench.bench_search import pin_threads
from engine.budgets import Budget, until_all_met
from engine.candidate_scoring import SharedPrefixScorer
from engine.data import as_batches, load_data
from engine.greedy import Cost, GreedySlimmer, candidates
from engine.partial_forward import PartialForward
from engine.train import build_for_mode
from models import count_macs
from models.ops import SlimBatchNorm2d, SlimConv2d, SlimLinear

CIFAR = next(
    (
        root / "shared" / "data" / "cifar10-subset"
        for root in Path(__file__).resolve().parents
        if (root / "shared" / "data" / "cifar10-subset").is_dir()
    ),
    Path("../shared/data/cifar10-subset"),
)


class CostMeter:
    """Seconds by (phase, layer kind), filled by a wrapped `PartialForward._call`."""

    def __init__(self) -> None:
        self.phase = "other"
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.phases: dict[str, float] = defaultdict(float)

    def timed_phase(self, phase: str, work):
        """Run ``work()`` with its node time booked to ``phase``; its wall time too."""
        previous, self.phase = self.phase, phase
        started = time.perf_counter()
        try:
            return work()
        finally:
            self.phases[phase] += time.perf_counter() - started
            self.phase = previous


def layer_kind(graph: PartialForward, node) -> str:
    """A readable kind for a graph node: conv flavour, BN, activation, addition, ..."""
    if node.op == "call_module":
        module = graph.modules[node.target]
        if isinstance(module, SlimConv2d):
            if module.depthwise:
                return "conv depthwise"
            return (
                "conv 1x1" if module.kernel_size == (1, 1) else f"conv {module.kernel_size[0]}x{module.kernel_size[1]}"
            )
        if isinstance(module, SlimBatchNorm2d):
            return "batchnorm"
        if isinstance(module, SlimLinear):
            return "linear"
        return type(module).__name__.lower()
    return getattr(node.target, "__name__", str(node.target))


def instrument(scorer: SharedPrefixScorer, meter: CostMeter) -> None:
    """Book every node's time and every phase of the scorer to ``meter`` (instance-level wrappers)."""
    graph = scorer.graph
    call = graph._call

    def timed_call(node, values):
        started = time.perf_counter()
        out = call(node, values)
        meter.seconds[(meter.phase, layer_kind(graph, node))] += time.perf_counter() - started
        return out

    graph._call = timed_call
    for name, phase in (("_carry", "carry"), ("_calibrate_from", "calib"), ("_evaluate_from", "score")):
        method = getattr(scorer, name)
        setattr(scorer, name, lambda *a, _m=method, _p=phase: meter.timed_phase(_p, lambda: _m(*a)))
    narrow = graph.narrow
    graph.narrow = lambda *a: meter.timed_phase("narrow", lambda: narrow(*a))


def step_range(space, bins: int, budget: Budget) -> tuple[int, int]:
    """Steps one-bin greedy slimming needs to reach ``budget`` if every step removed the bin worth
    the most MACs, and if every step removed the one worth the fewest: the range the search's step
    count lies in, whatever the scores."""
    counts = []
    for pick in (min, max):
        widths, n = space.full(), 0
        while not budget.fits(Cost(count_macs(space, widths), 0, None)):
            options = candidates(space, widths, bins)
            if not options:
                break
            widths = pick(options.values(), key=lambda w: count_macs(space, w))
            n += 1
        counts.append(n)
    return counts[0], counts[1]


def measure(arch: str, data, args: argparse.Namespace) -> None:
    net = build_for_mode(arch, "usnet-nonuniform", data.num_classes, args.input_size, args.width_mult).eval()
    calib = as_batches(data.train_plain, args.calib_size, args.batch_size)
    score = as_batches(data.val, args.score_size, args.batch_size)
    slimmer = GreedySlimmer(net, calib, score, bins=args.bins)
    meter = CostMeter()
    instrument(slimmer.scorer, meter)
    space = net.space
    full_macs = count_macs(space, space.full())
    budget = Budget("macs", args.budget * full_macs)
    counted = {"candidates": 0, "from_cut": 0.0}
    graph = slimmer.scorer.graph

    scored = slimmer.scorer.score

    def counting(parent, options):
        counted["candidates"] += len(options)
        counted["from_cut"] += sum(1 - graph.cut(g) / graph.end for g in options)
        return scored(parent, options)

    slimmer.scorer.score = counting
    met = until_all_met([budget])
    started = time.perf_counter()
    steps = slimmer.run(lambda s: met(s) or (args.steps is not None and len(s) > args.steps))
    total = time.perf_counter() - started
    n = len(steps) - 1
    fewest, most = step_range(space, args.bins, budget)
    print(
        f"\n## {arch} x{args.width_mult} at {args.input_size} px: {len(space.groups)} groups, {args.bins} bins, "
        f"full {full_macs / 1e6:.2f}M MACs -> budget {args.budget:.0%} ({budget.target / 1e6:.2f}M), "
        f"calib {len(calib)} / score {len(score)} images, batch {args.batch_size}"
    )
    print(f"steps to the budget if every step removed the most / the fewest MACs: {fewest} / {most}")
    print(
        f"steps {n}{'' if met(steps) else ' (stopped early)'}, candidates {counted['candidates']} ({counted['candidates'] / max(n, 1):.1f} per step), "
        f"reached {steps[-1].macs / 1e6:.2f}M MACs; each candidate runs {counted['from_cut'] / max(counted['candidates'], 1):.0%} "
        f"of the graph's nodes from its cut"
    )
    print(
        f"wall {total:.1f} s, {total / max(n, 1):.2f} s per step; per candidate per image "
        f"{1e3 * total / max(counted['candidates'], 1) / (len(calib) + len(score)):.3f} ms"
    )
    accounted = sum(meter.phases.values())
    print("| phase | s | share |\n| --- | --- | --- |")
    for phase, seconds in sorted(meter.phases.items(), key=lambda kv: -kv[1]):
        print(f"| {phase} | {seconds:.1f} | {seconds / total:.0%} |")
    print(f"| other (bookkeeping, step-0 score) | {total - accounted:.1f} | {(total - accounted) / total:.0%} |")
    kinds = sorted(
        {k for _, k in meter.seconds}, key=lambda k: -sum(v for (p, kk), v in meter.seconds.items() if kk == k)
    )
    print("| layer kind | carry s | calib s | score s | share of node time |\n| --- | --- | --- | --- | --- |")
    node_total = sum(meter.seconds.values())
    for kind in kinds:
        row = [meter.seconds.get((p, kind), 0.0) for p in ("carry", "calib", "score")]
        print(f"| {kind} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.1f} | {sum(row) / node_total:.0%} |")


def layout_ratio(arch: str, data, args: argparse.Namespace, steps: int = 2) -> None:
    """Time of the first greedy steps in the default (NCHW) and channels-last (NHWC) memory layout,
    alternated twice, the faster run of each kept."""
    net = build_for_mode(arch, "usnet-nonuniform", data.num_classes, args.input_size, args.width_mult).eval()
    calib = as_batches(data.train_plain, args.calib_size, args.batch_size)
    score = as_batches(data.val, args.score_size, args.batch_size)
    best: dict[bool, float] = {}
    trajectories = {}
    for _ in range(2):
        for channels_last in (False, True):
            slimmer = GreedySlimmer(net, calib, score, bins=args.bins, channels_last=channels_last)
            started = time.perf_counter()
            trajectories[channels_last] = slimmer.run(lambda s: len(s) > steps)
            best[channels_last] = min(best.get(channels_last, float("inf")), time.perf_counter() - started)
    same = [s.widths for s in trajectories[False]] == [s.widths for s in trajectories[True]]
    print(
        f"{arch}: {steps} greedy steps, NCHW {best[False]:.1f} s, channels-last {best[True]:.1f} s: "
        f"{best[False] / best[True]:.2f}x faster in channels-last; same steps taken: {same}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="mobilenet_v2,resnet18")
    p.add_argument("--dataset", default=f"cifar10:{CIFAR}" if CIFAR.is_dir() else "digits")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--bins", type=int, default=10)
    p.add_argument("--budget", type=float, default=0.4, help="MACs budget as a fraction of the full network")
    p.add_argument("--calib-size", type=int, default=64)
    p.add_argument("--score-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, help="stop after this many steps (the cost split is per step)")
    p.add_argument("--layout", action="store_true", help="only time NCHW against channels-last on the first steps")
    args = p.parse_args()
    pin_threads(args.threads)
    data = load_data(args.dataset, input_size=args.input_size)
    print(f"dataset {data.name}, torch threads {torch.get_num_threads()}")
    for arch in args.archs.split(","):
        if args.layout:
            layout_ratio(arch, data, args)
        else:
            measure(arch, data, args)


if __name__ == "__main__":
    main()
