"""Whole-search timings: the time of every attempt, not only the last one's.

The engine times the attempt it runs; a search resumed after a lost worker, a cancel or a failure
ran several attempts, and its figures must add them all up (a search that took ten minutes over
two attempts must not report the last one's minute).  The worker clocks each phase from the
progress reports it receives, adds what earlier attempts stored in ``searches.timings``, and
writes the sum back with every progress write and heartbeat, so a killed attempt's time is kept up
to its last write.  Keys are the engine's: ``data_s``, ``train_s``, ``search_s``, ``retrain_s``,
``export_s`` and ``total_s``; a phase no attempt entered (training, for a supernet taken from the
cache) has no key.
"""

from __future__ import annotations

import time
from typing import Any

TIMED_PHASES = ("data", "train", "search", "retrain", "export")


class SearchClock:
    """Seconds per phase and in all, over the attempts so far (``prior``) and the running one."""

    def __init__(self, prior: dict[str, Any] | None) -> None:
        self.prior = {k: float(v) for k, v in (prior or {}).items()
                      if k.endswith("_s") and isinstance(v, (int, float))}
        self.started = self.mark = time.monotonic()
        self.phase: str | None = None
        self.current: dict[str, float] = {}

    def observe(self, phase: str | None) -> None:
        """A progress report of ``phase`` arrived: the time since the last one belongs to the phase it was in."""
        now = time.monotonic()
        self._charge(now)
        self.phase, self.mark = phase, now

    def _charge(self, now: float) -> None:
        if self.phase in TIMED_PHASES:
            key = f"{self.phase}_s"
            self.current[key] = self.current.get(key, 0.0) + now - self.mark
        self.mark = now

    def snapshot(self) -> dict[str, float]:
        """Whole-search seconds so far: earlier attempts plus this one up to now."""
        self._charge(time.monotonic())
        out = dict(self.prior)
        for key, seconds in self.current.items():
            out[key] = out.get(key, 0.0) + seconds
        out["total_s"] = self.prior.get("total_s", 0.0) + time.monotonic() - self.started
        return {k: round(v, 3) for k, v in out.items()}

    @property
    def trained(self) -> bool:
        """Whether any attempt of this search trained (part of) its supernet."""
        return "train_s" in self.prior or "train_s" in self.current
