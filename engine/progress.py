"""Progress of a search job: its overall percent from each phase's own (`JobProgress`), throughput
and ETA meters for long phases, and a printer for report dicts.

Phases take fixed shares of the job (training dominates; a reused supernet gives its share to the
rest), so a progress bar moves steadily forward and never jumps back: the only change of plan,
skipping training, happens before any later phase has reported.

The engine only ever emits plain dicts through a ``ReportFn``; how they are shown is up to the
caller.  `ProgressPrinter` is the command line's way: a one-line bar redrawn in place on a
terminal, and plain lines (at most one per ``line_every_s``) when output goes to a file or pipe.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from engine.spec import PHASES, ReportFn


class Meter:
    """Mean loss and images per second over the last window; ETA from the mean step time so far.

    A window mean, not the last batch's loss: one batch's loss is too noisy to watch.
    """

    def __init__(self, total_steps: int, done_steps: int = 0) -> None:
        self.total, self.start_done = total_steps, done_steps
        self.start = self.window_start = time.monotonic()
        self.window_images, self.window_loss, self.window_steps = 0, 0.0, 0

    def update(self, images: int, loss: float) -> None:
        self.window_images += images
        self.window_loss += loss
        self.window_steps += 1

    def snapshot(self, done_steps: int) -> dict[str, float]:
        """Figures over the window since the last snapshot; resets the window."""
        now = time.monotonic()
        rate = self.window_images / max(now - self.window_start, 1e-9)
        loss = self.window_loss / max(self.window_steps, 1)
        self.window_start, self.window_images, self.window_loss, self.window_steps = now, 0, 0.0, 0
        steps_here = done_steps - self.start_done
        per_step = (now - self.start) / steps_here if steps_here else 0.0
        return {"loss": loss, "images_per_s": rate, "eta_s": per_step * (self.total - done_steps)}


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class ProgressPrinter:
    """A ``ReportFn`` that draws training progress for a person watching a terminal."""

    def __init__(self, stream: TextIO | None = None, width: int = 30, line_every_s: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.width, self.line_every_s = width, line_every_s
        self.last_line = float("-inf")

    def __call__(self, event: dict[str, Any]) -> None:
        if "event" in event:  # a notice for the log (weights loaded, head replaced): always its own line
            self.stream.write(("\n" if self.tty else "") + event["event"]["message"] + "\n")
        text = self.describe(event)
        if self.tty:
            filled = int(self.width * event.get("percent", 0.0) / 100)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r[{bar}] {text}\033[K")
            if event.get("percent", 0.0) >= 100:
                self.stream.write("\n")
        elif time.monotonic() - self.last_line >= self.line_every_s or event.get("percent", 0.0) >= 100:
            self.stream.write(text + "\n")
            self.last_line = time.monotonic()
        self.stream.flush()

    @staticmethod
    def describe(event: dict[str, Any]) -> str:
        parts = [f"{event.get('phase', '')} {event.get('percent', 0.0):5.1f}%"]
        if "epoch" in event:
            parts.append(f"epoch {event['epoch']}/{event['epochs']} step {event['step']}")
        if "loss" in event:
            parts.append(f"loss {event['loss']:.4f} lr {event['lr']:.4g}")
        if "steps_done" in event:
            parts.append(f"step {event['steps_done']}")
        if "images_per_s" in event:
            parts.append(f"{event['images_per_s']:.0f} img/s ETA {format_seconds(event['eta_s'])}")
        elif event.get("eta_s") is not None:
            parts.append(f"ETA {format_seconds(event['eta_s'])}")
        return "  ".join(parts)


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
