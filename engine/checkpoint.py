"""Supernet checkpoints: one plain dict per file, written atomically.

A checkpoint holds everything a run needs to continue bit-for-bit where it stopped: the network
spec (so the supernet can be rebuilt without any other file), the training spec, model, optimizer
and scheduler state, every random generator, the epoch and step counters and a ``finished`` flag.
Files are written to a temporary name and renamed over the old one, so a crash mid-write never
leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.atomic import replacing

FORMAT = "autoslim.supernet-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or belongs to a different run."""


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    with replacing(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an autoslim supernet checkpoint")
    return state


def rng_states(sampler: torch.Generator) -> dict[str, Any]:
    """Every generator a training step may draw from: torch (CPU and CUDA), python, numpy, widths."""
    states = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "sampler": sampler.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any], sampler: torch.Generator) -> None:
    torch.set_rng_state(states["torch"].cpu())
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    sampler.set_state(states["sampler"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
