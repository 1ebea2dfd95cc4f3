"""The dashboard's Jinja2 environment and the filters its templates use to print figures."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path

from fastapi.templating import Jinja2Templates

from engine.budgets import format_amount

TEMPLATES = Path(__file__).parent / "templates"


def human_duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``, ``1 d 04 h``; an em dash when unknown."""
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


def amount(value: float | None) -> str:
    return "—" if value is None else format_amount(value)


def percent(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}%"


def when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


@lru_cache(maxsize=1)
def templates() -> Jinja2Templates:
    """Built on first use, not at import."""
    env = Jinja2Templates(directory=TEMPLATES)
    env.env.filters.update(duration=human_duration, amount=amount, percent=percent, when=when)
    return env
