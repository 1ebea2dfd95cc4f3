"""Whole-search timings: the time of every attempt, not only the last one's.

The engine times the attempt it runs; a search resumed after a lost worker, a cancel or a failure
ran several attempts, and its figures must add them all up (a search that took ten minutes over
two attempts must not report the last one's minute).  The worker clocks each phase from the
progress reports it receives, adds what earlier attempts stored in ``searches.timings``, and
writes the sum back with every progress write and heartbeat, so a killed attempt's time is kept up
to its last write.  Keys are the engine's: ``data_s``, ``train_s``, ``search_s``, ``retrain_s``,
``export_s`` and ``total_s``; while a search runs, a phase no attempt entered (training, for a
supernet taken from the cache) has no key, which is how an attempt that trained is told apart.
"""

from __future__ import annotations

import time
from typing import Any

TIMED_PHASES = ("data", "train", "search", "retrain", "export")


class SearchClock:
    """Seconds per phase and in all, over the attempts so far (``prior``) and the running one."""

    def __init__(self, prior: dict[str, Any] | None) -> None:
        self.prior = {k: float(v) for k, v in (prior or {}).items() if k.endswith("_s") and isinstance(v, (int, float))}
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

    def final(self, last_attempt: dict[str, Any] | None) -> dict[str, Any]:
        """The figures of a search that just succeeded: per phase, the earlier attempts' clocked
        seconds plus the engine's own timing of the last attempt (more exact than the clock, and
        with every phase key); in all, the wall time of every attempt.  The engine's figures are
        kept as ``last_attempt``."""
        engine = {
            k: float(v)
            for k, v in (last_attempt or {}).items()
            if k.endswith("_s") and k != "total_s" and isinstance(v, (int, float))
        }
        out = dict(self.prior)
        for key, seconds in engine.items():
            out[key] = out.get(key, 0.0) + seconds
        out["total_s"] = self.snapshot()["total_s"]
        return {**{k: round(v, 3) for k, v in out.items()}, "last_attempt": last_attempt}

    @property
    def trained(self) -> bool:
        """Whether any attempt of this search trained (part of) its supernet."""
        return "train_s" in self.prior or "train_s" in self.current
