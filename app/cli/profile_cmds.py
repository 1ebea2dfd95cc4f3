"""``autoslim profile``: measure a latency table on the device a model will be deployed to.

Runs on the device itself with torch, onnx, onnxruntime and numpy installed and nothing of the
service (no FastAPI, Celery, SQLAlchemy): every import here is of `engine` and `models`, made
inside the handler.  The table file it writes is uploaded to the service (``POST
/latency-tables``) or given to ``autoslim search --latency-table``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from engine.spec import SearchSettings

RUNTIMES = ("onnxruntime", "torch")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure a per-layer latency table on this device (for latency budgets)")
    p.add_argument("--arch", required=True, help="architecture (see `autoslim archs`)")
    p.add_argument("--input-size", type=int, required=True, help="pixels, as the search will use")
    p.add_argument("--width-mult", type=float, default=1.0, help="width of the full supernet (default 1.0)")
    p.add_argument("--num-classes", type=int, default=10, help="classes of the search's dataset (default 10)")
    p.add_argument("--width-min", type=float, default=0.25, help="lower width bound of the search (default 0.25)")
    p.add_argument("--divisor", type=int, default=SearchSettings.divisor, help="channel divisor (default 8)")
    p.add_argument(
        "--bins",
        type=int,
        default=SearchSettings.bins,
        help="channel bins per layer group, as the search will use (default 10)",
    )
    p.add_argument("--runtime", choices=RUNTIMES, required=True, help="what the model will run with")
    p.add_argument(
        "--provider",
        default="CPUExecutionProvider",
        help="ONNX Runtime execution provider (default CPUExecutionProvider)",
    )
    p.add_argument("--device", default="cpu", help="torch device for --runtime torch (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads the deployment runs with (default 1)")
    p.add_argument("--batch-size", type=int, default=1, help="images per inference (default 1)")
    p.add_argument("--device-name", help="how the table names this device (default: the CPU or GPU model)")
    p.add_argument(
        "--fit-models",
        type=int,
        default=8,
        help="random whole models (besides the full and the smallest) the correction is fitted on (default 8)",
    )
    p.add_argument(
        "--block-ms",
        type=float,
        default=2.0,
        help="each op is timed as the fastest of 5 blocks at least this long (default 2; whole models 25x)",
    )
    p.add_argument("--out", type=Path, required=True, help="the table file to write (JSON)")
    p.set_defaults(handler=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from engine.latency import measure_table
    from engine.latency_runtimes import Timing, make_runtime
    from models import build_supernet

    if min(args.threads, args.batch_size, args.fit_models) < 1 or args.bins < 2 or not args.block_ms > 0:
        raise ValueError(
            "--threads, --batch-size and --fit-models must be at least 1, --bins at least 2, --block-ms positive"
        )
    supernet = build_supernet(
        args.arch, args.num_classes, args.input_size, args.width_mult, args.divisor, args.width_min
    ).eval()
    runtime = make_runtime(args.runtime, args.device, args.provider, args.threads)
    started = time.monotonic()
    table = measure_table(
        supernet,
        runtime,
        args.batch_size,
        args.bins,
        max_levels=None,
        timing=Timing(block_s=args.block_ms / 1000),
        progress=lambda done: _progress(done, started),
        fit_configs=args.fit_models,
    )
    if args.device_name:
        table.key["device"] = args.device_name
    table.save(args.out)
    print(summary(table, args.out, time.monotonic() - started))
    return 0


def _progress(done: float, started: float) -> None:
    print(
        f"\rtiming layers {100 * done:5.1f}%  {time.monotonic() - started:6.1f}s", end="", file=sys.stderr, flush=True
    )
    if done >= 1:
        print("; fitting on whole models", file=sys.stderr, flush=True)


def summary(table, path: Path, seconds: float) -> str:  # noqa: ANN001 - a LatencyTable
    """What was measured, on what, and how well the whole-model line fits its own measurements."""
    key = table.key
    cells = sum(math.prod(len(level) for level in c.levels) for c in table.nodes.values())
    errors = [
        abs(table.scale * m["sum_of_layers_ms"] + table.overhead_ms - m["measured_ms"]) / m["measured_ms"]
        for m in table.fit.values()
    ]
    return (
        f"wrote {path}: {key['net']['arch']} x{key['net']['width_mult']:g} at {key['net']['input_size']} px, "
        f"{len(table.nodes)} nodes, {cells} grid points in {seconds:.0f}s\n"
        f"device {key['device']}; {key['runtime']} {key['version']} ({key['provider']}), "
        f"{key['threads']} thread(s), batch {key['batch_size']}, {key['bins']} bins\n"
        f"whole model = {table.scale:.3f} x sum of layers {table.overhead_ms:+.3f} ms; full {table.fit['full']['measured_ms']:.3f} ms, "
        f"smallest {table.fit['smallest']['measured_ms']:.3f} ms; mean fit error {100 * sum(errors) / len(errors):.1f}% "
        f"over {len(errors)} models"
    )
