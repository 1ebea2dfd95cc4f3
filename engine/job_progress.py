"""A search job's overall percent, from each phase's own progress.

Phases take fixed shares of the job (training dominates; a reused supernet gives its share to the
rest), so a progress bar moves steadily forward and never jumps back: the only change of plan,
skipping training, happens before any later phase has reported.
"""

from __future__ import annotations

from typing import Any

from engine.spec import PHASES, ReportFn

SHARES = {"data": 3.0, "train": 60.0, "search": 25.0, "retrain": 25.0, "export": 4.0, "done": 0.0}


class JobProgress:
    def __init__(self, report: ReportFn | None, retrain: bool) -> None:
        self.report = report
        self.shares = dict(SHARES, retrain=SHARES["retrain"] if retrain else 0.0)
        self._layout()

    def skip_training(self) -> None:
        """The supernet came from the cache: its share goes to the other phases."""
        self.shares["train"] = 0.0
        self._layout()

    def _layout(self) -> None:
        total, start = sum(self.shares.values()), 0.0
        self.start, self.width = {}, {}
        for phase in PHASES:
            self.start[phase], self.width[phase] = start, 100.0 * self.shares[phase] / total
            start += self.width[phase]

    def __call__(self, phase: str, fraction: float, **extra: Any) -> None:
        """Report ``fraction`` (0-1) of ``phase`` done, with any extra fields."""
        if self.report is not None:
            percent = 100.0 if phase == "done" else self.start[phase] + self.width[phase] * min(1.0, max(0.0, fraction))
            self.report({"phase": phase, "percent": round(percent, 2), **extra})

    def sub(self, phase: str, offset: float = 0.0, share: float = 1.0) -> ReportFn:
        """A ``report`` for a routine with its own 0-100 percent (training, retraining), mapped into
        ``offset .. offset + share`` of ``phase``; its other fields pass through."""
        def forward(event: dict[str, Any]) -> None:
            extra = {k: v for k, v in event.items() if k not in ("phase", "percent")}
            self(phase, offset + share * float(event.get("percent", 0.0)) / 100.0, **extra)

        return forward
