"""Suite-wide fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from engine.device import available_cores


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each test process gets its share of the cores (through ``OMP_NUM_THREADS``,
    which the engine and the workers the tests start both honour): two processes with a thread per
    core each would spin against each other on a small machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, available_cores() // workers))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The supernet and latency cache folder the test modules share, so a supernet several modules
    use (one recipe, one cache key) trains once per run."""
    return tmp_path_factory.getbasetemp() / "autoslim-caches"
