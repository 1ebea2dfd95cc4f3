"""Suite-wide fixtures and settings.

The README runs the suite as two pytest-xdist worker processes (`-n 2`): much of its time is Python
overhead on tiny tensors and waiting on service processes, which one process cannot overlap.  Each
worker computes on one thread (two processes with two OpenMP threads each would oversubscribe two
cores).  Each worker keeps its own supernet and latency caches: a latency table measured by the other
worker under other load would change the latency figures of a search that reuses it mid-module.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")

if XDIST_WORKER:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The supernet and latency cache folder this test process shares across its modules."""
    return tmp_path_factory.getbasetemp() / "autoslim-caches"
