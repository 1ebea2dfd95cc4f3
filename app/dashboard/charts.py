"""Inline SVG charts for the dashboard: pure functions from numbers to markup.

No chart library and no JavaScript: the server draws the greedy trajectory (accuracy against MACs,
the point chosen for each budget, the uniform-width baseline) and the per-layer channel bars, so
the page works with scripts off and a test can read the points straight out of the markup.  Every
mark carries ``data-*`` attributes with its values and a ``<title>`` tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from engine.budgets import format_amount

MARGIN = {"left": 56, "right": 16, "top": 16, "bottom": 44}


@dataclass(frozen=True)
class Point:
    """One mark of the accuracy curve; ``label`` is its tooltip (and the budget's name when chosen)."""

    macs: float
    accuracy: float
    label: str = ""


@dataclass(frozen=True)
class Scale:
    """A linear map from the data interval [lo, hi] onto the pixel interval [start, end]."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo
        return self.start + (value - self.lo) / span * (self.end - self.start) if span else (self.start + self.end) / 2


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise ValueError(f"no ticks for the interval [{lo}, {hi}]")
    if hi == lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [round(i * step, 12) for i in range(first, math.floor(hi / step + 1e-9) + 1)]


def padded(values: Sequence[float], fraction: float = 0.05) -> tuple[float, float]:
    """The range of ``values`` widened by ``fraction`` on each side (one value gets a unit range)."""
    lo, hi = min(values), max(values)
    pad = (hi - lo) * fraction or max(abs(hi) * fraction, 1.0)
    return lo - pad, hi + pad


def accuracy_curve(
    trajectory: Sequence[Point],
    chosen: Sequence[Point] = (),
    baseline: Sequence[Point] = (),
    width: int = 720,
    height: int = 360,
) -> Markup:
    """Accuracy (%) against MACs: the greedy trajectory as a line of dots, each budget's chosen
    configuration as a ringed, labelled dot, and the uniform-width baseline dashed beside them."""
    points = [*trajectory, *chosen, *baseline]
    if not points:
        return Markup('<p class="empty">No trajectory yet.</p>')
    x = Scale(*padded([p.macs for p in points], 0.03), MARGIN["left"], width - MARGIN["right"])
    y = Scale(*padded([p.accuracy for p in points]), height - MARGIN["bottom"], MARGIN["top"])
    parts = [_svg_open(width, height, "accuracy against MACs"), _axes(x, y, width, height)]
    parts += _series(baseline, x, y, "baseline", marker="square")
    parts += _series(trajectory, x, y, "trajectory", marker="dot")
    parts += [_chosen_mark(p, x, y) for p in chosen]
    parts.append(_legend(width, height, bool(baseline), bool(chosen)))
    parts.append("</svg>")
    return Markup("".join(parts))


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
    )


def _axes(x: Scale, y: Scale, width: int, height: int) -> str:
    bottom, left = height - MARGIN["bottom"], MARGIN["left"]
    out = [
        f'<g class="axes"><line x1="{left}" y1="{bottom}" x2="{width - MARGIN["right"]}" y2="{bottom}"/>',
        f'<line x1="{left}" y1="{MARGIN["top"]}" x2="{left}" y2="{bottom}"/>',
    ]
    for tick in nice_ticks(x.lo, x.hi, 6):
        px = x(tick)
        out.append(
            f'<line class="grid" x1="{px:.1f}" y1="{MARGIN["top"]}" x2="{px:.1f}" y2="{bottom}"/>'
            f'<text x="{px:.1f}" y="{bottom + 16}" text-anchor="middle">{format_amount(tick)}</text>'
        )
    for tick in nice_ticks(y.lo, y.hi, 5):
        py = y(tick)
        out.append(
            f'<line class="grid" x1="{left}" y1="{py:.1f}" x2="{width - MARGIN["right"]}" y2="{py:.1f}"/>'
            f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    out.append(
        f'<text class="label" x="{(left + width - MARGIN["right"]) / 2}" y="{height - 6}" '
        f'text-anchor="middle">MACs</text>'
    )
    out.append(
        f'<text class="label" x="14" y="{(MARGIN["top"] + bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(MARGIN["top"] + bottom) / 2})">accuracy (%)</text></g>'
    )
    return "".join(out)


def _series(points: Sequence[Point], x: Scale, y: Scale, name: str, marker: str) -> list[str]:
    if not points:
        return []
    ordered = sorted(points, key=lambda p: p.macs)
    path = " ".join(f"{x(p.macs):.1f},{y(p.accuracy):.1f}" for p in ordered)
    out = [f'<g class="series {name}"><polyline points="{path}"/>']
    for p in ordered:
        px, py = x(p.macs), y(p.accuracy)
        shape = (
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3"'
            if marker == "dot"
            else f'<rect x="{px - 3.5:.1f}" y="{py - 3.5:.1f}" width="7" height="7"'
        )
        out.append(
            f'{shape} class="point {name}-point" {_data(p)}><title>{_tooltip(p)}</title>'
            f"</{'circle' if marker == 'dot' else 'rect'}>"
        )
    out.append("</g>")
    return out


def _chosen_mark(p: Point, x: Scale, y: Scale) -> str:
    px, py = x(p.macs), y(p.accuracy)
    return (
        f'<g class="chosen"><circle cx="{px:.1f}" cy="{py:.1f}" r="7" class="point chosen-point" {_data(p)}>'
        f"<title>{_tooltip(p)}</title></circle>"
        f'<text x="{px:.1f}" y="{py - 11:.1f}" text-anchor="middle">{escape(p.label)}</text></g>'
    )


def _legend(width: int, height: int, baseline: bool, chosen: bool) -> str:
    """Bottom right: accuracy rises with MACs, so that corner is the one the curves leave empty."""
    items = [("trajectory", "greedy trajectory")]
    items += [("chosen", "chosen for a budget")] if chosen else []
    items += [("baseline", "uniform width")] if baseline else []
    left, bottom = width - MARGIN["right"] - 150, height - MARGIN["bottom"] - 10
    rows = "".join(
        f'<g class="legend-item {cls}"><circle cx="{left + 8}" cy="{bottom - 16 * (len(items) - 1 - i)}" r="4"/>'
        f'<text x="{left + 18}" y="{bottom + 4 - 16 * (len(items) - 1 - i)}">{text}</text></g>'
        for i, (cls, text) in enumerate(items)
    )
    return f'<g class="legend">{rows}</g>'


def _data(p: Point) -> str:
    return f'data-macs="{float(p.macs)!r}" data-accuracy="{float(p.accuracy)!r}"'


def _tooltip(p: Point) -> Markup:
    head = f"{escape(p.label)}: " if p.label else ""
    return Markup(f"{head}{format_amount(p.macs)} MACs, {p.accuracy:.2f}%")


def channel_bars(channels: Mapping[str, int], full: Mapping[str, int], width: int = 720, height: int = 150) -> Markup:
    """One bar per layer (in network order, from ``full``): the chosen channel count drawn over the
    full width, so where a configuration slims, and how much, is visible at a glance."""
    if not full:
        return Markup('<p class="empty">No layers.</p>')
    unknown = sorted(set(channels) - set(full))
    if unknown:
        raise ValueError(f"layers not in the full network: {', '.join(unknown[:5])}")
    top, bottom = 8, height - 18
    slot = (width - MARGIN["left"] - MARGIN["right"]) / len(full)
    y = Scale(0, max(full.values()), bottom, top)
    out = [
        _svg_open(width, height, "channels per layer against the full width"),
        f'<g class="axes"><line x1="{MARGIN["left"]}" y1="{bottom}" x2="{width - MARGIN["right"]}" y2="{bottom}"/>',
        f'<text x="{MARGIN["left"] - 6}" y="{top + 8}" text-anchor="end">{max(full.values())}</text>',
        f'<text x="{MARGIN["left"] - 6}" y="{bottom}" text-anchor="end">0</text>',
        f'<text class="label" x="{MARGIN["left"]}" y="{height - 4}">layers in network order</text></g>',
    ]
    for i, (layer, total) in enumerate(full.items()):
        kept = channels.get(layer, total)
        bx, bw = MARGIN["left"] + i * slot + slot * 0.1, slot * 0.8
        out.append(
            f'<g class="layer" data-layer="{escape(layer)}" data-channels="{kept}" data-full="{total}">'
            f"<title>{escape(layer)}: {kept} of {total} channels</title>"
            f'<rect class="full" x="{bx:.1f}" y="{y(total):.1f}" width="{bw:.1f}" height="{bottom - y(total):.1f}"/>'
            f'<rect class="kept" x="{bx:.1f}" y="{y(kept):.1f}" width="{bw:.1f}" height="{bottom - y(kept):.1f}"/></g>'
        )
    out.append("</svg>")
    return Markup("".join(out))
