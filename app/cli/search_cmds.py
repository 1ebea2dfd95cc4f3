"""``autoslim search`` and ``autoslim retrain``: the search job and retraining from the shell."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from app.cli.ranks import add_nproc, launched
from engine.spec import (
    CRITERIA,
    PRETRAINED_TRAIN,
    TEACHERS,
    TRAIN_MODES,
    BudgetAnswer,
    CacheFolders,
    RetrainSpec,
    SearchResult,
    SearchSettings,
    SearchSpec,
    TrainSpec,
    UniformPoint,
    with_pretrained_defaults,
)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="AutoSlim: per-layer channel counts for MACs / latency / params budgets")
    p.add_argument("--arch", required=True, help="architecture (see `autoslim archs`)")
    p.add_argument("--dataset", required=True, help="digits | cifar10:DIR | imagefolder:DIR")
    p.add_argument(
        "--macs", default="", help="MACs budgets, e.g. 2M,4M (suffixes k, M, G) or 40%%,60%% of the full network"
    )
    p.add_argument(
        "--latency-ms",
        default="",
        help="latency budgets in ms, e.g. 1.5,3: on this machine (batch 1), or on the device of --latency-table",
    )
    p.add_argument(
        "--latency-table", type=Path, help="a table from `autoslim profile`: latency budgets are for its device"
    )
    p.add_argument("--params", default="", help="parameter budgets, e.g. 100k or 50%%")
    p.add_argument(
        "--weights",
        type=Path,
        help="trained weights of the full network to start the supernet from (a state dict: .pt or .safetensors)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        help=f"supernet training epochs (default {TrainSpec.epochs}; {PRETRAINED_TRAIN['epochs']} with --weights)",
    )
    p.add_argument("--out", type=Path, required=True, help="work folder: configs, models, result.json (resumable)")
    p.add_argument("--width-mult", type=float, default=1.0, help="width of the full supernet")
    p.add_argument(
        "--width-min",
        type=float,
        default=TrainSpec.width_min,
        help="narrowest width ratio trained, and so the narrowest a layer may be slimmed to",
    )
    p.add_argument("--divisor", type=int, default=SearchSettings.divisor, help="channel counts are multiples of this")
    p.add_argument("--mode", choices=[m for m in TRAIN_MODES if m != "snet"], default=TrainSpec.mode)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=TrainSpec.batch_size)
    p.add_argument(
        "--lr",
        type=float,
        help=f"peak learning rate (default {TrainSpec.lr}; {PRETRAINED_TRAIN['lr']} "
        "with --weights, which also skip the warm-up)",
    )
    p.add_argument("--bins", type=int, default=SearchSettings.bins, help="channel bins per layer group")
    p.add_argument("--calib-size", type=int, default=SearchSettings.calib_size, help="images for BN calibration")
    p.add_argument("--score-size", type=int, default=SearchSettings.score_size, help="held-out images to score with")
    p.add_argument(
        "--bins-per-step",
        type=int,
        default=SearchSettings.bins_per_step,
        help="most bins a greedy step removes far from a budget (1 with --race-fraction 0: the exact search)",
    )
    p.add_argument(
        "--race-fraction",
        type=float,
        default=SearchSettings.race_fraction,
        help="share of the images a first round scores candidates on to drop clear losers (0: no racing)",
    )
    p.add_argument(
        "--criterion",
        choices=CRITERIA,
        default=SearchSettings.criterion,
        help="what ranks a greedy step's candidates first: held-out accuracy or loss",
    )
    p.add_argument(
        "--no-fill",
        dest="fill",
        action="store_false",
        help="keep each budget's first greedy step as it is (default: widen it while it fits the budget)",
    )
    p.add_argument(
        "--teacher",
        choices=TEACHERS,
        help="who narrower widths distil from: the moving full width "
        "(default) or the frozen network training started from "
        "('original', the default with --weights)",
    )
    p.add_argument("--retrain-epochs", type=int, default=0, help="fine-tune each answer for this many epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_nproc(p)
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser("retrain", help="fine-tune a channel config from a supernet (or train it from scratch)")
    p.add_argument("--config", type=Path, required=True, help="channel-config JSON")
    p.add_argument("--dataset", required=True, help="digits | cifar10:DIR | imagefolder:DIR")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--checkpoint", type=Path, help="supernet checkpoint to start from (default: from scratch)")
    p.add_argument("--out", type=Path, required=True, help="folder for model.pt, config.json, retrain.json")
    p.add_argument(
        "--lr",
        type=float,
        help=f"peak learning rate (default {RetrainSpec.lr} fine-tuning, {TrainSpec.lr} from scratch)",
    )
    p.add_argument("--batch-size", type=int, default=TrainSpec.batch_size)
    p.add_argument("--calib-size", type=int, default=SearchSettings.calib_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=cmd_retrain)


def cmd_search(args: argparse.Namespace) -> int:
    status = launched(args)
    if status is not None:
        return status
    from engine import run_search
    from engine.distributed import init_from_env, shutdown
    from engine.progress import ProgressPrinter

    spec, printer = search_spec(args), ProgressPrinter()
    ranks = init_from_env(args.device)
    try:
        result = run_search(
            spec,
            args.out,
            ranks=ranks,
            caches=_caches(args.out),
            report=lambda event: printer({k: v for k, v in event.items() if k != "trajectory_step"}),
        )
    finally:
        shutdown()
    if ranks.is_main:
        print(_table(SearchResult.from_dict(result), args.out))
    return 0


def search_spec(args: argparse.Namespace) -> SearchSpec:
    """The job ``autoslim search``'s options describe."""
    from engine.budgets import parse_targets

    return SearchSpec(
        arch=args.arch,
        dataset=args.dataset,
        macs=_counts(parse_targets(args.macs)),
        latency_ms=parse_targets(args.latency_ms),
        params=_counts(parse_targets(args.params)),
        input_size=args.input_size,
        width_mult=args.width_mult,
        seed=args.seed,
        device=args.device,
        train=_train_spec(args),
        search=SearchSettings(
            bins=args.bins,
            divisor=args.divisor,
            calib_size=args.calib_size,
            score_size=args.score_size,
            bins_per_step=args.bins_per_step,
            race_fraction=args.race_fraction,
            criterion=args.criterion,
            fill=args.fill,
        ),
        retrain=RetrainSpec(epochs=args.retrain_epochs),
        latency_table=str(args.latency_table or ""),
        weights=str(args.weights or ""),
    )


def _caches(out: Path) -> CacheFolders:
    """The service's cache folders when its settings name them (``AUTOSLIM_SUPERNET_CACHE``,
    ``AUTOSLIM_LATENCY_CACHE``), so a search from the shell reuses what the workers trained; else
    beside the work folder."""
    beside = CacheFolders.beside(out)
    return CacheFolders(
        _env_path("AUTOSLIM_SUPERNET_CACHE", beside.supernets), _env_path("AUTOSLIM_LATENCY_CACHE", beside.latency)
    )


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def _train_spec(args: argparse.Namespace) -> TrainSpec:
    """The options given; the rest from the scratch defaults, or the pretrained recipe with --weights."""
    given = {
        k: v
        for k, v in {
            "mode": args.mode,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "width_min": args.width_min,
            "teacher": args.teacher,
        }.items()
        if v is not None
    }
    return TrainSpec(**(with_pretrained_defaults(given) if args.weights else given))


def _counts(targets: list) -> list:
    """Amounts of MACs or params as whole numbers; shares (``"40%"``) stay as they are."""
    return [t if isinstance(t, str) else int(t) for t in targets]


def _table(result: SearchResult, out: Path) -> str:
    """One line per budget; MACs and params in millions, accuracy in percent.  Beside each answer, the
    width multiplier's supernet accuracy at the same MACs and the answer's margin over it."""
    from engine.budgets import Budget

    retrained = any(b.test_accuracy is not None for b in result.budgets)
    head = f"{'budget':>16} {'MACs':>9} {'params':>9} {'latency':>10} {'val acc':>8} {'width x':>8} {'margin':>7}" + (
        f" {'test acc':>8}" if retrained else ""
    )
    lines = [head + "  config"]
    widths = [width_accuracy(result.uniform, b.macs) for b in result.budgets]
    for b, width in zip(result.budgets, widths):
        versus = ("-", "-") if width is None else (f"{width:.2f}%", f"{b.val_accuracy - width:+.2f}")
        row = (
            f"{Budget(b.kind, b.target).describe():>16} {b.macs / 1e6:>8.3f}M {b.params / 1e6:>8.4f}M "
            f"{_ms(b.latency_ms):>10} {b.val_accuracy:>7.2f}% {versus[0]:>8} {versus[1]:>7}"
        )
        if retrained:
            row += f" {b.test_accuracy:>7.2f}%"
        lines.append(f"{row}  {out / b.files['config']}")
    full = result.full
    lines.append(
        f"{'full network':>16} {full.macs / 1e6:>8.3f}M {full.params / 1e6:>8.4f}M "
        f"{_ms(full.latency_ms):>10} {full.val_accuracy:>7.2f}%"
    )
    lines += _latency_lines(result.budgets)
    if any(width is not None for width in widths):
        lines.append(
            "width x: the supernet at a uniform width multiplier of the same MACs (interpolated between "
            "the two nearest measured widths), scored like the answers; margin: the answer's val acc less it"
        )
    supernet = result.supernet
    lines.append(f"supernet {supernet.key} ({'reused' if supernet.reused else 'trained'}): {supernet.path}")
    return "\n".join(lines)


def width_accuracy(uniform: list[UniformPoint], macs: float) -> float | None:
    """The width multiplier's supernet accuracy at ``macs``, linear between the two measured uniform widths
    around it (None outside their range, and for a MutualNet search, which has none)."""
    points = sorted((u.macs, u.val_accuracy) for u in uniform)
    for (low_macs, low_acc), (high_macs, high_acc) in zip(points, points[1:]):
        if low_macs <= macs <= high_macs:
            share = 0.0 if high_macs == low_macs else (macs - low_macs) / (high_macs - low_macs)
            return low_acc + share * (high_acc - low_acc)
    return None


def _ms(latency_ms: float | None) -> str:
    return "-" if latency_ms is None else f"{latency_ms:.3f}ms"


def _latency_lines(budgets: list[BudgetAnswer]) -> list[str]:
    """Which device the latency column is for; with a device table, the worker's own figures too."""
    if not budgets or budgets[0].latency_device is None:
        return []
    first = budgets[0]
    lines = [f"latency on {first.latency_device}, {first.latency_runtime}"]
    if first.worker_latency_ms is not None:
        figures = ", ".join(f"{b.worker_latency_ms:.3f}ms" for b in budgets)
        lines.append(f"on this worker ({first.worker_latency_device}, {first.worker_latency_runtime}): {figures}")
    return lines


def cmd_retrain(args: argparse.Namespace) -> int:
    from engine.atomic import write_json
    from engine.data import as_batches, load_data
    from engine.progress import ProgressPrinter
    from engine.retrain import initial_model, retrain
    from engine.train import load_supernet
    from models import ChannelConfig
    from models.files import save_model

    config = ChannelConfig.load(args.config)
    data = load_data(args.dataset, input_size=config.net.input_size, seed=args.seed)
    supernet = calib = None
    if args.checkpoint is not None:
        supernet = load_supernet(args.checkpoint)
        calib = as_batches(data.train_plain, limit=args.calib_size, seed=args.seed)
    model = initial_model(config, supernet, calib, args.seed)
    fine_tune = supernet is not None
    lr = args.lr if args.lr is not None else (RetrainSpec.lr if fine_tune else TrainSpec.lr)
    recipe = TrainSpec(batch_size=args.batch_size, lr=lr)
    done = retrain(
        model,
        data,
        recipe,
        args.epochs,
        lr,
        fine_tune=fine_tune,
        seed=args.seed,
        device=args.device,
        report=ProgressPrinter(),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    save_model(done.model, args.out / "model.pt", config.net.input_size)
    config.accuracy = done.test.accuracy
    config.extra.update(
        test_accuracy=done.test.accuracy,
        retrained_epochs=args.epochs,
        retrained_from="scratch" if not fine_tune else str(args.checkpoint),
    )
    config.save(args.out / "config.json")
    write_json(args.out / "retrain.json", done.record(args.epochs, from_scratch=not fine_tune), indent=2)
    print(f"test accuracy: {done.test.accuracy:.2f}% ({len(data.test)} images; model in {args.out / 'model.pt'})")
    return 0
