"""Slicing overhead: CPU forward time of the supernet at a configuration over the exported slim model's.

The supernet runs a configuration by slicing the first channels of its full-width weights on every
forward; the exported model holds those slices as ordinary parameters.  The issue's bar is an
overhead of at most 1.3x.  Both models are timed in the same process, interleaved (so drift in CPU
frequency or background load hits both alike), under ``torch.inference_mode`` after a warm-up, and
the median of the repeats is reported.

    python -m bench.bench_slicing                      # every architecture, 32 px and 224 px
    python -m bench.bench_slicing --archs resnet50 --sizes 224 --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

import models

BATCH_AT = {32: 64, 224: 8}
"""Batch size per input size (the issue's setting: 64 images at 32 px, 8 at 224 px)."""


@dataclass
class Row:
    arch: str
    size: int
    config: str
    macs: int
    supernet_ms: float
    slim_ms: float
    ratio: float


def _once(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def time_pair(
    supernet: nn.Module, slim: nn.Module, x: torch.Tensor, warmup: int, repeats: int
) -> tuple[float, float, float]:
    """Median milliseconds of one forward of each model, and the median of the paired ratios.

    The two are measured alternately; the ratio of each back-to-back pair cancels slow drift in
    the machine's load, so its median is the steadier overhead figure on a shared machine.
    """
    with torch.inference_mode():
        for _ in range(warmup):
            _once(supernet, x), _once(slim, x)
        pairs = [(_once(supernet, x), _once(slim, x)) for _ in range(repeats)]
    supernet_s, slim_s = (statistics.median(t[i] for t in pairs) for i in (0, 1))
    return 1e3 * supernet_s, 1e3 * slim_s, statistics.median(a / b for a, b in pairs)


def configurations(supernet: models.Supernet, seed: int, n_random: int) -> dict[str, dict[str, int]]:
    """Full, uniform 0.5x, smallest and a few nonuniform random configurations."""
    space = supernet.space
    generator = torch.Generator().manual_seed(seed)
    configs = {"full": space.full(), "uniform-0.5": space.uniform(0.5), "smallest": space.smallest()}
    configs.update({f"random-{i}": space.random(generator) for i in range(n_random)})
    return configs


def bench_arch(arch: str, size: int, args: argparse.Namespace) -> list[Row]:
    num_classes = 10 if size <= 64 else 1000
    supernet = models.build_supernet(arch, num_classes=num_classes, input_size=size, width_mult=args.width_mult).eval()
    x = torch.randn(BATCH_AT.get(size, args.batch), 3, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    for name, widths in configurations(supernet, args.seed, args.random).items():
        supernet.set_widths(widths)
        slim = models.export_slim(supernet, widths)
        timing = time_pair(supernet, slim, x, args.warmup, args.repeats)
        rows.append(Row(arch, size, name, models.count_macs(supernet.space, widths), *timing))
        print(format_row(rows[-1]), flush=True)
    return rows


HEADER = f"{'arch':<14}{'px':>5}  {'config':<13}{'MMACs':>9}{'supernet ms':>13}{'slim ms':>10}{'ratio':>8}"


def format_row(row: Row) -> str:
    return (
        f"{row.arch:<14}{row.size:>5}  {row.config:<13}{row.macs / 1e6:>9.1f}"
        f"{row.supernet_ms:>13.2f}{row.slim_ms:>10.2f}{row.ratio:>7.2f}x"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=None, help="default: every registered architecture")
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 224])
    p.add_argument("--batch", type=int, default=16, help="batch for sizes other than 32 and 224")
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--random", type=int, default=2, help="random configurations per architecture")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} (after {args.warmup} warm-up)"
    )
    print(HEADER)
    rows = [
        row for size in args.sizes for arch in args.archs or models.list_archs() for row in bench_arch(arch, size, args)
    ]
    worst = max(rows, key=lambda r: r.ratio)
    print(f"worst slicing overhead: {worst.ratio:.2f}x ({worst.arch}, {worst.size} px, {worst.config}); bar: 1.30x")


if __name__ == "__main__":
    main()
