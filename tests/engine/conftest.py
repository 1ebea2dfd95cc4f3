"""Shared engine fixtures: the digits loaded once per session (tests must not mutate them)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine.data import DataSplits, as_batches, load_data
from engine.data.batches import Batches
from engine.spec import SearchSpec
from engine.supernet_cache import obtain_supernet
from engine.train import load_supernet


@pytest.fixture(scope="session")
def digits16() -> DataSplits:
    """Digits at 16 px: small enough that CIFAR-stem networks train in seconds on 2 cores."""
    return load_data("digits", input_size=16)


@pytest.fixture(scope="module")
def trained(digits16: DataSplits, cache_root: Path):
    """ResNet-18 x0.25 at 16 px, nonuniform US-Net, one short epoch (far from converged: the tests
    are about the search's mechanics, `bench/` about its quality).  Same recipe and cache folder as
    test_run_search's, so the session trains it once."""
    spec = SearchSpec.from_dict(
        {
            "arch": "resnet18",
            "dataset": "digits",
            "input_size": 16,
            "width_mult": 0.25,
            "train": {"epochs": 1, "batch_size": 16, "lr": 0.05},
        }
    )
    entry = obtain_supernet(spec, digits16, cache_root / "supernets")
    return load_supernet(entry.path)


@pytest.fixture(scope="module")
def tiny(digits16: DataSplits) -> DataSplits:
    """256 training images (8 steps of 32) so a training run takes about a second."""
    keep = torch.arange(256)
    return replace(
        digits16,
        train=digits16.train.subset(keep, digits16.train.augment),
        train_plain=digits16.train_plain.subset(keep, None),
    )


@pytest.fixture(scope="module")
def samples(digits16: DataSplits) -> tuple[Batches, Batches]:
    return as_batches(digits16.train_plain, 128, 64), as_batches(digits16.val, 128, 64)
