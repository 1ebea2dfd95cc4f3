"""Suite-wide fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The supernet and latency cache folder the test modules share, so a supernet several modules
    use (one recipe, one cache key) trains once per run."""
    return tmp_path_factory.getbasetemp() / "autoslim-caches"
