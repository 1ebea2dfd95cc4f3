"""The autoslim arm of `bench.bench_peers`: the product's own `run_search`, started from the user's weights.

One search job per seed, with every budget in it, so one supernet and one greedy trajectory
serve all three (as a user would run it: ``autoslim search --weights ... --macs 25%,50%,70%``,
everything else at its defaults).  The job counts MACs with autoslim's counter; the bench holds
every arm to Torch-Pruning's.  The budgets handed to the job are the bench's, converted by the
two counters' ratio on the full network; an answer still over the bench's budget by Torch-Pruning's
counter is searched again with that budget lowered by the excess (the job resumes its trajectory
and reuses its supernet, so that costs only the tail of the search).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from bench.bench_peers import SliceOver
from bench.peer_arms import Answer, tp_cost
from engine import run_search
from engine.spec import Cancelled, SearchSpec
from models import count_macs

ATTEMPTS = 5
VARIANTS = {
    "autoslim": {},
    "autoslim-teacher-full": {"train": {"teacher": "full"}},
    "autoslim-loss": {"search": {"criterion": "loss"}},
    "autoslim-nofill": {"search": {"fill": False}},
}
"""The product's defaults, and each lever set back (or forward) alone: the ablation rows."""


def autoslim_answer(bench, arm: str, percent: int, seed: int) -> Answer:
    """The answer of the seed's search job for ``percent`` of the full MACs, under the budget by Torch-Pruning's counter."""
    folder = bench.out / arm / f"s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    targets_path = folder / "targets.json"
    user_macs = bench.user()[1]["macs"]
    own_full = count_macs(bench.user_supernet().space, bench.user_supernet().space.full())
    scale = own_full / user_macs
    targets = (
        json.loads(targets_path.read_text())
        if targets_path.is_file()
        else {str(p): int(bench.budget(p) * scale) for p in bench.args.budgets}
    )
    budget = bench.budget(percent)
    for _ in range(ATTEMPTS):
        result = _search(bench, folder, seed, targets, VARIANTS[arm])
        entry = result["budgets"][sorted(targets).index(str(percent))]
        model = torch.load(folder / "job" / entry["files"]["pt"], weights_only=False)
        macs, params = tp_cost(model)
        if macs <= budget:
            timing = json.loads((folder / "timing.json").read_text())
            return Answer(
                model,
                macs,
                params,
                timing["search_s"],
                f"step {entry.get('step')}, own counter {entry['macs']}, val {entry['val_accuracy']:.2f}%",
            )
        targets[str(percent)] = int(targets[str(percent)] - (macs - budget) * scale - 0.002 * own_full)
        targets_path.write_text(json.dumps(targets))
    raise ValueError(f"autoslim found nothing under {budget:.0f} MACs by Torch-Pruning's counter")


def _search(bench, folder: Path, seed: int, targets: dict[str, int], overrides: dict) -> dict:
    """The seed's search job with these budgets; the wall time until its first result (over slices) is the arm's
    search time (supernet training, latency table, greedy trajectory, fill, uniform baseline, export).
    Supernets are cached beside every variant's jobs, so variants that train alike share one."""
    os.environ["AUTOSLIM_SUPERNET_CACHE"] = str((bench.out / "supernets").resolve())
    spec = SearchSpec.from_dict(
        {
            **overrides,
            "arch": "resnet18",
            "dataset": bench.dataset,
            "width_mult": 0.25,
            "input_size": 32,
            "seed": seed,
            "device": "cpu",
            "macs": [targets[p] for p in sorted(targets)],
            "export_formats": ["pt"],
            "weights": str((bench.out / "user" / "weights.pt").resolve()),
        }
    )
    spent_path = folder / "spent.json"  # wall time of earlier slices' runs of this job
    spent = json.loads(spent_path.read_text())["seconds"] if spent_path.is_file() else 0.0
    started = time.monotonic()
    try:
        result = run_search(spec, folder / "job", report=_printer(), should_cancel=bench.overtime)
    except Cancelled as stop:  # the job keeps its progress (supernet checkpoint, search state)
        spent_path.write_text(json.dumps({"seconds": spent + time.monotonic() - started}))
        raise SliceOver(f"autoslim {folder.name}: {stop}; rerun to continue") from None
    if not (folder / "timing.json").is_file():
        (folder / "timing.json").write_text(
            json.dumps({"search_s": spent + time.monotonic() - started, "timings": result["timings"]})
        )
    return result


def _printer():
    last = {"phase": None}

    def report(event: dict) -> None:
        if event.get("phase") != last["phase"] or "event" in event:
            print(
                f"    autoslim: {event.get('phase')} {event.get('percent', 0):.0f}%"
                f" {event.get('event', {}).get('message', '')}",
                flush=True,
            )
            last["phase"] = event.get("phase")

    return report
