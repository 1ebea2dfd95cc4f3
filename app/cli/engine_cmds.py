"""``autoslim train``: train a slimmable supernet from the shell, no server involved."""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.cli.ranks import add_nproc, launched
from engine.spec import PRETRAINED_TRAIN, TRAIN_MODES, TrainSpec, with_pretrained_defaults

# Options that must agree with a run being resumed, and where the checkpoint stores them.
_STORED = {
    "arch": ("net", "arch"),
    "width_mult": ("net", "width_mult"),
    "input_size": ("net", "input_size"),
    "width_min": ("net", "width_min"),
    "mode": ("train", "mode"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "warmup_epochs": ("train", "warmup_epochs"),
}
_DEFAULTS = {
    "mode": "usnet-nonuniform",
    "epochs": TrainSpec.epochs,
    "batch_size": TrainSpec.batch_size,
    "lr": TrainSpec.lr,
    "warmup_epochs": TrainSpec.warmup_epochs,
    "width_mult": 1.0,
    "input_size": 32,
    "width_min": 0.25,
    "seed": 0,
}


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a slimmable supernet (S-Net, US-Net, nonuniform US-Net, MutualNet)")
    p.add_argument("--arch", help="architecture (see `autoslim archs`)")
    p.add_argument("--dataset", help="digits | cifar10:DIR | imagefolder:DIR")
    p.add_argument("--mode", choices=TRAIN_MODES, help=f"training mode (default {_DEFAULTS['mode']})")
    p.add_argument(
        "--epochs", type=int, help=f"default {_DEFAULTS['epochs']}; {PRETRAINED_TRAIN['epochs']} with --weights"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for last.pt (progress) and final.pt")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (its settings are stored there)")
    p.add_argument("--width-mult", type=float, help="width of the full supernet (default 1.0)")
    p.add_argument("--width-min", type=float, help="lower width bound (default 0.25)")
    p.add_argument("--batch-size", type=int, help=f"default {_DEFAULTS['batch_size']}")
    p.add_argument(
        "--lr",
        type=float,
        help=f"peak learning rate (default {_DEFAULTS['lr']}; {PRETRAINED_TRAIN['lr']} "
        "with --weights, which also skip the warm-up)",
    )
    p.add_argument(
        "--weights",
        type=Path,
        help="trained weights of the full network to start from (a state dict: .pt or .safetensors)",
    )
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--input-size", type=int, help="pixels (default 32)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--calib-size", type=int, default=2000, help="images for BN calibration in the summary")
    add_nproc(p)
    p.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    status = launched(args)
    if status is not None:
        return status
    from engine.data import as_batches, load_data
    from engine.distributed import init_from_env, shutdown
    from engine.progress import ProgressPrinter
    from engine.spec import Cancelled
    from engine.train import build_for_mode, train_supernet

    settings = _settings(args)
    ranks = init_from_env(args.device)
    with ranks.main_first():  # a download happens once
        data = load_data(settings["dataset"], input_size=settings["input_size"], seed=settings["seed"])
    supernet = build_for_mode(
        settings["arch"],
        settings["mode"],
        data.num_classes,
        settings["input_size"],
        settings["width_mult"],
        settings["width_min"],
        seed=settings["seed"],
    )
    if args.weights is not None:
        _start_from(supernet, args.weights)
    spec = replace(
        TrainSpec(),
        mode=settings["mode"],
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        warmup_epochs=settings["warmup_epochs"],
        width_min=settings["width_min"],
    )
    stop = _StopOnInterrupt()
    try:
        with stop:
            final = train_supernet(
                supernet,
                data,
                spec,
                args.out,
                seed=settings["seed"],
                device=args.device,
                report=ProgressPrinter(),
                should_cancel=stop,
                ranks=ranks,
            )
    except Cancelled:
        if not ranks.is_main:
            return 130
        print(f"\ninterrupted; continue with: autoslim train --out {args.out} --resume", file=sys.stderr)
        return 130
    finally:
        shutdown()
    if not ranks.is_main:
        return 0
    print(f"wrote {final}")
    _print_summary(
        supernet,
        as_batches(data.val, device=_device_of(supernet)),
        as_batches(data.train_plain, limit=args.calib_size, seed=settings["seed"], device=_device_of(supernet)),
    )
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings: the options given, or (with --resume) those stored in the checkpoint."""
    given = {k: getattr(args, k, None) for k in ("arch", "dataset", "seed", *_STORED)}
    given = {k: v for k, v in given.items() if v is not None}
    last = args.out / "last.pt"
    if args.resume and args.weights is not None:
        raise ValueError("--weights starts a new run; --resume continues the one in --out from its checkpoint")
    if not args.resume:
        if last.exists():
            raise ValueError(
                f"{args.out} already holds a training run; pass --resume to continue it or choose another --out"
            )
        missing = [f"--{k}" for k in ("arch", "dataset") if k not in given]
        if missing:
            raise ValueError(f"missing {' and '.join(missing)}")
        return {**_DEFAULTS, **(with_pretrained_defaults(given) if args.weights is not None else given)}
    from engine.checkpoint import load_checkpoint

    if not last.exists():
        raise ValueError(f"--resume: {args.out} holds no run to resume (no last.pt)")
    state = load_checkpoint(last)
    stored = {key: state[part][field] for key, (part, field) in _STORED.items()}
    stored.update(dataset=state["data"], seed=state["seed"])
    for key, value in given.items():
        if key != "dataset" and value != stored[key]:
            raise ValueError(f"--{key.replace('_', '-')} {value} differs from the stored run's {stored[key]}")
    return {**stored, "dataset": given.get("dataset", stored["dataset"])}


def _start_from(supernet, path: Path) -> None:
    """Load the user's trained weights into the supernet (see `engine.initial_weights`)."""
    from engine.initial_weights import load_initial_weights, read_state_dict

    loaded = load_initial_weights(supernet, read_state_dict(path))
    print(f"started from {path}" + (f"; {loaded.head_message()}" if loaded.replaced else ""))


def _device_of(module) -> Any:
    return next(module.parameters()).device


def _print_summary(supernet, val, calib) -> None:
    from engine.width_scores import report_ratios, score_uniform

    shared = not supernet.spec.switches
    print(f"held-out accuracy ({len(val)} validation images{', BN calibrated' if shared else ''}):")
    for row in score_uniform(supernet, report_ratios(supernet), val, calib if shared else None):
        print(f"  width {row.ratio:4.2f}x  {row.macs / 1e6:8.2f}M MACs  {row.score.accuracy:6.2f}%")


class _StopOnInterrupt:
    """Ctrl-C asks training to stop at the next step, after a checkpoint, instead of killing it."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> _StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._request)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _request(self, *_args) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
