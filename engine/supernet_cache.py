"""Trained supernets kept by recipe, so a later search of the same network and data trains nothing.

The key is a hash of everything that determines the trained weights: architecture and network
shape, the dataset (its resolved name), the validation split (the training images are what it
leaves), the whole training spec, the seed, and the sha256 of the initial weights when training
starts from some (`engine.initial_weights`).  The device is not part of it: a supernet trained on
a GPU serves a CPU search.  Each key owns a folder holding the trainer's ``last.pt`` (so an
interrupted training resumes, from whichever job picks it up next) and ``final.pt``.  A lock file
serialises training of one key: a second job asking for the same supernet waits, then reuses it.

Location: the folder the caller names (`engine.spec.CacheFolders.supernets`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.data import DataSplits
from engine.distributed import Ranks, current
from engine.initial_weights import file_sha256, start_from_weights
from engine.spec import CancelFn, ReportFn, SearchSpec
from engine.train import build_for_mode, train_supernet
from models import Supernet


@dataclass
class CachedSupernet:
    key: str
    path: Path  # final.pt
    reused: bool  # True when no training happened in this call


def recipe(spec: SearchSpec, data: DataSplits) -> dict:
    """Everything that determines the trained weights (the cache key is its hash).  The weights' file is
    named by its content, so the same upload under another path reuses the supernet."""
    out = {
        "arch": spec.arch,
        "dataset": data.name,
        "num_classes": data.num_classes,
        "input_size": spec.input_size,
        "width_mult": spec.width_mult,
        "divisor": spec.search.divisor,
        "val_fraction": spec.search.val_fraction,
        "train": asdict(spec.train),
        "seed": spec.seed,
    }
    if spec.weights:
        out["weights_sha256"] = file_sha256(spec.weights)
    return out


def supernet_key(spec: SearchSpec, data: DataSplits) -> str:
    return hashlib.sha256(json.dumps(recipe(spec, data), sort_keys=True).encode()).hexdigest()[:24]


def fresh_supernet(spec: SearchSpec, data: DataSplits) -> Supernet:
    """The untrained supernet of this search (its channel space is known before any training)."""
    return build_for_mode(mode=spec.train.mode, seed=spec.seed, **spec.network(data.num_classes))


def obtain_supernet(
    spec: SearchSpec,
    data: DataSplits,
    root: Path,
    report: ReportFn | None = None,
    should_cancel: CancelFn | None = None,
    ranks: Ranks | None = None,
) -> CachedSupernet:
    """The trained supernet of ``spec``: from the cache, or trained into it (resuming a partial run).

    With several ranks, rank 0 alone takes the lock and decides (the others follow its answer), and
    all of them train together.
    """
    ranks = ranks or current()
    key = supernet_key(spec, data)
    folder = root / key
    final = folder / "final.pt"
    if ranks.broadcast(final.is_file()):
        return CachedSupernet(key, final, True)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{key}.lock") if ranks.is_main else nullcontext():
        if ranks.broadcast(final.is_file()):  # another job finished it while we waited
            return CachedSupernet(key, final, True)
        if ranks.is_main:
            (folder / "recipe.json").write_text(json.dumps(recipe(spec, data), indent=2, sort_keys=True))
        supernet = fresh_supernet(spec, data)
        if spec.weights:
            start_from_weights(supernet, spec, data, report if ranks.is_main else None)
        train_supernet(
            supernet,
            data,
            spec.train,
            folder,
            seed=spec.seed,
            device=spec.device,
            report=report,
            should_cancel=should_cancel,
            ranks=ranks,
        )
    return CachedSupernet(key, final, False)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
