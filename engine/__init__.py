"""The algorithms: data, supernet training, BN calibration, greedy slimming, run_search.

``from engine import run_search, SearchSpec, Cancelled`` is the library surface.  `run_search` is
imported on first use, so importing `engine.spec` (the API and the worker validate specs) does not
pull in torch and the training stack.
"""

from __future__ import annotations

from typing import Any

from engine.spec import Cancelled, SearchSpec

__all__ = ["Cancelled", "SearchSpec", "run_search"]


def __getattr__(name: str) -> Any:
    if name == "run_search":
        from engine.search_job import run_search

        return run_search
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
