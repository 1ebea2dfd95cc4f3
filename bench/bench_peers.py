"""Evidence: from one trained network, autoslim's answer against its peers at 25/50/70% of the MACs.

The user's model (ResNet-18 x0.25, CIFAR stem) is trained once on the CIFAR-10 subset of
../shared/data and cached.  For every seed and budget each arm slims it (`bench.peer_arms`: width
multiplier, Torch-Pruning L1 uniform / L1 global / Taylor global, Model Optimizer FastNAS; and
autoslim through its own `run_search`, supernet started from the trained weights), every answer is
fine-tuned with one recipe (`engine.retrain.retrain`) and scored on the test split.  With
``--distil`` every arm gets a second row fine-tuned with distillation from the user's network.

- MACs are counted by one independent counter, Torch-Pruning's, for every arm, and every arm is
  held to the budget by it (an autoslim answer over it is searched again with the budget lowered).
- Searches score on a held-out split of the training images: seed s holds out 10% (stratified, by
  s); the user's model never trained on any seed's held-out images.  The test split is only scored.
- Seeds change the held-out split, every search's randomness and the fine-tuning order.
- Resumable: every (arm, budget, seed) result is a JSON file under ``--out``; a run stops before
  starting new work once ``--minutes`` have passed, so it runs in slices under the heavy lock.

Install the peers (never needed by the product): ``pip install -e '.[bench]'`` (modelopt runs on
CPU; it needs ``torchprofile==0.0.4``, newer releases break its FLOPs counter).  Then::

    flock /tmp/autoslim-heavy.lock python -m bench.bench_peers --minutes 13   # repeat until it prints the table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.peer_arms import Answer, fastnas, torch_pruning, tp_cost, width_multiplier
from engine.data import DataSplits, as_batches, load_data, stratified_split
from engine.data.batches import Batches
from engine.initial_weights import load_initial_weights
from engine.retrain import retrain
from engine.spec import TrainSpec
from engine.train import build_for_mode
from models import build

ARCH, WIDTH, CLASSES, INPUT = "resnet18", 0.25, 10, 32
PEERS = ("width", "tp-l1-uniform", "tp-l1-global", "tp-taylor-global", "fastnas")
ARMS = (*PEERS, "autoslim")
ABLATIONS = ("autoslim-teacher-full", "autoslim-loss", "autoslim-nofill")
LABELS = {
    "width": "width multiplier (first channels)",
    "tp-l1-uniform": "Torch-Pruning L1, uniform ratio",
    "tp-l1-global": "Torch-Pruning L1, global",
    "tp-taylor-global": "Torch-Pruning Taylor, global",
    "fastnas": "modelopt FastNAS (divisor 8)",
    "autoslim": "autoslim (pretrained start, default recipe)",
    "autoslim-teacher-full": "autoslim, moving full width as teacher",
    "autoslim-loss": "autoslim, loss criterion",
    "autoslim-nofill": "autoslim, no budget fill",
}
USER_EPOCHS, USER_LR = 10, 0.1
VAL_FRACTION = 0.1
SCORE_SIZE, CALIB_SIZE = 1000, 2000
OVERTIME_S = 120
"""A piece of work started before the slice ended may run this long past it (autoslim's search job
then stops and resumes in the next slice): a slice holds the heavy lock for ``--minutes`` + 2 at most."""


class SliceOver(Exception):
    """This slice's time is spent: rerun to continue (everything finished so far is kept)."""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, Path(args.out)
        self.dataset = f"cifar10:{args.data}"
        self.deadline = time.monotonic() + 60 * args.minutes
        self._data: dict[int, DataSplits] = {}

    # ---- inputs ----------------------------------------------------------------------------------
    def data(self, seed: int) -> DataSplits:
        if seed not in self._data:
            self._data[seed] = load_data(self.dataset, INPUT, VAL_FRACTION, seed)
        return self._data[seed]

    def user(self) -> tuple[nn.Module, dict]:
        """The user's trained network: trained once, on images no seed holds out, then cached."""
        folder = self.out / "user"
        if not (folder / "user.json").is_file():
            self._tick("the user's network")
            data = self.data(0)
            held = {
                int(i)
                for s in self.args.seeds
                for i in stratified_split(_all_labels(self.args.data), VAL_FRACTION, s)[1]
            }
            keep0 = stratified_split(_all_labels(self.args.data), VAL_FRACTION, 0)[0]
            rows = torch.tensor([pos for pos, i in enumerate(keep0.tolist()) if i not in held])
            own = replace(data, train=data.train.subset(rows, data.train.augment))
            model = build(ARCH, num_classes=CLASSES, input_size=INPUT, width_mult=WIDTH)
            done = retrain(
                model, own, TrainSpec(batch_size=64), USER_EPOCHS, USER_LR, fine_tune=False, seed=0, device="cpu"
            )
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(done.model.state_dict(), folder / "weights.pt")
            macs, params = tp_cost(done.model)
            _write(
                folder / "user.json",
                {
                    "test_accuracy": done.test.accuracy,
                    "macs": macs,
                    "params": params,
                    "train_images": len(rows),
                    "epochs": USER_EPOCHS,
                    "seconds": done.seconds,
                },
            )
        model = build(ARCH, num_classes=CLASSES, input_size=INPUT, width_mult=WIDTH)
        model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
        return model.eval(), json.loads((folder / "user.json").read_text())

    def budget(self, percent: int) -> float:
        return self.user()[1]["macs"] * percent / 100

    # ---- results ---------------------------------------------------------------------------------
    def result(self, arm: str, percent: int, seed: int, distil: bool) -> dict:
        """One fine-tuned answer (cached)."""
        path = self.out / "results" / f"{arm}{'+distil' if distil else ''}-{percent}-s{seed}.json"
        if path.is_file():
            return json.loads(path.read_text())
        model, meta = self.answer(arm, percent, seed)
        self._tick(f"fine-tuning {arm} {percent}% seed {seed}{' with distillation' if distil else ''}")
        teacher = self.user()[0] if distil else None
        done = retrain(
            model,
            self.data(seed),
            TrainSpec(batch_size=64),
            self.args.finetune_epochs,
            self.args.finetune_lr,
            seed=seed,
            device="cpu",
            **({"teacher": teacher} if distil else {}),
        )
        out = {
            **meta,
            "arm": arm,
            "percent": percent,
            "seed": seed,
            "distil": distil,
            "test_accuracy": done.test.accuracy,
            "finetune_s": done.seconds,
        }
        _write(path, out)
        print(
            f"  {arm}{'+distil' if distil else ''} {percent}% seed {seed}: {out['macs'] / 1e6:.2f}M MACs, "
            f"test {done.test.accuracy:.2f}%",
            flush=True,
        )
        return out

    def answer(self, arm: str, percent: int, seed: int) -> tuple[nn.Module, dict]:
        """The arm's slim network before fine-tuning (cached), and its figures."""
        folder = self.out / "answers"
        path, meta_path = folder / f"{arm}-{percent}-s{seed}.pt", folder / f"{arm}-{percent}-s{seed}.json"
        if not meta_path.is_file():
            self._tick(f"searching {arm} {percent}% seed {seed}")
            found = self.search(arm, percent, seed)
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(found.model, path)
            budget = self.budget(percent)
            if found.macs > budget:
                raise AssertionError(f"{arm} {percent}%: {found.macs} MACs over the budget {budget:.0f}")
            _write(
                meta_path,
                {
                    "macs": found.macs,
                    "params": found.params,
                    "search_s": found.search_s,
                    "note": found.note,
                    "budget": budget,
                },
            )
        return torch.load(path, weights_only=False), json.loads(meta_path.read_text())

    def search(self, arm: str, percent: int, seed: int) -> Answer:
        user, budget, data = self.user()[0], self.budget(percent), self.data(seed)
        if arm == "width":
            return width_multiplier(self.user_supernet(divisor=1), budget)
        if arm.startswith("tp-"):
            _, importance, scope = arm.split("-")
            grads = as_batches(data.train_plain, 640, 64, seed)
            return torch_pruning(user, budget, importance, scope == "global", grads)
        if arm == "fastnas":
            folder = self.out / "fastnas"
            folder.mkdir(parents=True, exist_ok=True)
            return fastnas(user, budget, self.calib(seed), self.val(seed), folder / f"s{seed}.pth")
        if arm.startswith("autoslim"):
            from bench.autoslim_arm import autoslim_answer

            return autoslim_answer(self, arm, percent, seed)
        raise ValueError(f"unknown arm {arm!r}")

    def user_supernet(self, divisor: int = 8):
        """The user's network as a supernet (its full width computes what the network computes) on a channel
        grid of ``divisor``."""
        supernet = build_for_mode(ARCH, "usnet-nonuniform", CLASSES, INPUT, WIDTH, divisor=divisor)
        load_initial_weights(supernet, self.user()[0].state_dict())
        return supernet.eval()

    def calib(self, seed: int) -> Batches:
        return as_batches(self.data(seed).train_plain, CALIB_SIZE, 200, seed)

    def val(self, seed: int) -> Batches:
        return as_batches(self.data(seed).val, SCORE_SIZE, 200, seed)

    def overtime(self) -> bool:
        return time.monotonic() > self.deadline + OVERTIME_S

    def _tick(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise SliceOver(f"slice over before {what}: rerun to continue")
        print(f"[{time.strftime('%H:%M:%S')}] {what}", flush=True)


# ---- the table -------------------------------------------------------------------------------------
def table(bench: Bench, command: str) -> str:
    """Every cached result (this run's and earlier runs'), one row per arm and fine-tuning, per budget."""
    rows = [json.loads(p.read_text()) for p in sorted((bench.out / "results").glob("*.json"))]
    user = bench.user()[1]
    lines = [
        "# autoslim vs its peers, from one trained network\n",
        f"Produced by `{command}` (`bench/bench_peers.py`; its docstring says how to install the peers).\n",
        f"ResNet-18 x{WIDTH} (CIFAR stem), CIFAR-10 subset (`../shared/data/cifar10-subset`), trained "
        f"{user['epochs']} epochs on {user['train_images']} images: **{user['test_accuracy']:.2f}%** test, "
        f"{user['macs'] / 1e6:.2f}M MACs, {user['params'] / 1e3:.0f}k params (Torch-Pruning's counter, "
        f"the one counter every arm is held to).  Every answer fine-tuned {bench.args.finetune_epochs} epochs "
        f"at peak lr {bench.args.finetune_lr} (`engine.retrain`, cosine, no warm-up); test accuracy on the "
        f"2,000 test images, mean over the seeds (± half the spread between seeds).  Margin: an autoslim "
        f"row against the best peer's, a peer's against autoslim's.  Search s: wall time of the tool's own "
        f"search on 2 shared CPU cores (autoslim: supernet training + greedy trajectory + fill, one job per "
        f"seed serving all three budgets; FastNAS: its first budget includes the sensitivity pass the "
        f"others reuse).\n",
    ]
    for percent in bench.args.budgets:
        lines += [
            f"\n## {percent}% of the MACs ({bench.budget(percent) / 1e6:.2f}M)\n",
            "| arm | fine-tune | seeds | MACs | params | test % | ± | margin | search s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        groups = {
            (arm, distil): [r for r in rows if (r["arm"], r["distil"], r["percent"]) == (arm, distil, percent)]
            for distil in (False, True)
            for arm in ARMS + ABLATIONS
        }
        means = {key: statistics.mean(r["test_accuracy"] for r in got) for key, got in groups.items() if got}
        for (arm, distil), got in groups.items():
            if not got:
                continue
            acc = [r["test_accuracy"] for r in got]
            peers = [means[(a, distil)] for a in PEERS if (a, distil) in means]
            other = (max(peers) if peers else None) if arm.startswith("autoslim") else means.get(("autoslim", distil))
            margin = "" if other is None else f"{means[(arm, distil)] - other:+.2f}"
            bold = "**" if arm == "autoslim" else ""
            lines.append(
                f"| {LABELS[arm]} | {'distil' if distil else 'plain'} | "
                f"{','.join(str(r['seed']) for r in got)} | "
                f"{statistics.mean(r['macs'] for r in got) / 1e6:.2f}M | "
                f"{statistics.mean(r['params'] for r in got) / 1e3:.0f}k | "
                f"{bold}{means[(arm, distil)]:.2f}{bold} | {(max(acc) - min(acc)) / 2:.2f} | {margin} | "
                f"{statistics.mean(r['search_s'] for r in got):.0f} |"
            )
    return "\n".join(lines) + "\n"


def _distil_rows(args: argparse.Namespace) -> list[bool]:
    return [False, True] if args.distil else [False]


def _shared_data() -> Path:
    """``shared/data/cifar10-subset`` beside the checkout, or beside a folder above it (a worktree's)."""
    for folder in Path(__file__).resolve().parents[1].parents:
        if (folder / "shared/data/cifar10-subset").is_dir():
            return folder / "shared/data/cifar10-subset"
    return Path("../shared/data/cifar10-subset")


def _all_labels(root: str) -> torch.Tensor:
    with np.load(Path(root) / "train.npz") as arrays:
        return torch.from_numpy(arrays["y"].astype(np.int64))


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(_shared_data()), help="the CIFAR-10 subset (default: ../shared/data's)")
    parser.add_argument("--out", default="runs/bench_peers")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS + ABLATIONS)
    parser.add_argument("--budgets", nargs="+", type=int, default=[25, 50, 70], help="percent of the full MACs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument(
        "--distil",
        action="store_true",
        help="a second row per arm, fine-tuned with distillation from the user's network",
    )
    parser.add_argument("--minutes", type=float, default=13, help="start no new work after this long (a slice)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--table", type=Path, help="write the markdown table here once every result is in")
    parser.add_argument("--report", action="store_true", help="run nothing: the table of the results cached so far")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    try:
        print(f"user's network: {bench.user()[1]}", flush=True)
        for distil in [] if args.report else _distil_rows(args):
            for seed in args.seeds:
                for arm in args.arms:
                    for percent in args.budgets:
                        bench.result(arm, percent, seed, distil)
    except SliceOver as over:
        print(over)
        return
    text = table(bench, "python -m bench.bench_peers " + " ".join(_given(args)))
    print(text)
    if args.table:
        args.table.write_text(text)


def _given(args: argparse.Namespace) -> list[str]:
    """The options that differ from the defaults, for the table's "produced by" line."""
    out = []
    if args.arms != list(ARMS):
        out.append("--arms " + " ".join(args.arms))
    if args.seeds != [0, 1]:
        out.append("--seeds " + " ".join(map(str, args.seeds)))
    if args.distil:
        out.append("--distil")
    if args.finetune_epochs != 3:
        out.append(f"--finetune-epochs {args.finetune_epochs}")
    return out


if __name__ == "__main__":
    main()
