"""Progress for long phases: throughput and ETA meters, and a printer for report dicts.

The engine only ever emits plain dicts through a ``ReportFn``; how they are shown is up to the
caller.  `ProgressPrinter` is the command line's way: a one-line bar redrawn in place on a
terminal, and plain lines (at most one per ``line_every_s``) when output goes to a file or pipe.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


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
