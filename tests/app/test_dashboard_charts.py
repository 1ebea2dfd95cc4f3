"""The inline SVG charts as pure functions: ticks, the geometry of the accuracy curve (with a
uniform-width baseline scored by the engine), and the channel bars."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from app.dashboard import charts
from app.dashboard.search_page import baseline_points, uniform_baseline
from engine.width_scores import BASELINE_POINTS
from store.tables import Search

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def marks(svg: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in svg.iter() if cls in (e.get("class") or "").split()]


def centre(e: ET.Element) -> tuple[float, float]:
    if e.tag == f"{SVG}circle":
        return float(e.get("cx")), float(e.get("cy"))
    return float(e.get("x")) + float(e.get("width")) / 2, float(e.get("y")) + float(e.get("height")) / 2


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (7_730_432.0, 8_762_624.0), (38.1, 45.3), (-3.0, 17.0), (0.2, 0.2004)])
def test_ticks_are_round_evenly_spaced_and_inside_the_range(lo, hi):
    ticks = charts.nice_ticks(lo, hi, 5)
    assert 2 <= len(ticks) <= 11 and all(lo - 1e-9 <= t <= hi + 1e-9 for t in ticks)
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1
    (step,) = steps
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1.0, 2.0, 5.0)


def test_ticks_of_a_single_value_and_a_bad_range():
    assert charts.nice_ticks(3.0, 3.0) == [3.0]
    with pytest.raises(ValueError):
        charts.nice_ticks(2.0, 1.0)


@pytest.fixture(scope="module")
def engine_points(app, admin, finished_search):
    """The finished search's trajectory and chosen points, and the uniform-width baseline its
    engine run scored (the supernet at uniform widths, BN calibrated like every candidate)."""
    steps = admin.get(f"/searches/{finished_search['id']}/trajectory").json()["steps"]
    trajectory = [charts.Point(s["macs"], s["accuracy"], f"step {s['step']}") for s in steps]
    chosen = [charts.Point(b["macs"], b["val_accuracy"], f"{b['target']:g}") for b in finished_search["results"]]
    with app.state.sessionmaker() as session:
        baseline = baseline_points(uniform_baseline(session.get(Search, finished_search["id"])))
    assert len(baseline) == BASELINE_POINTS
    return trajectory, chosen, baseline


def test_the_curve_maps_more_macs_right_and_more_accuracy_up(engine_points):
    trajectory, chosen, baseline = engine_points
    svg = parse(charts.accuracy_curve(trajectory, chosen, baseline))
    width, height = (float(v) for v in svg.get("viewBox").split()[2:])
    for cls, points in (("trajectory-point", trajectory), ("baseline-point", baseline), ("chosen-point", chosen)):
        drawn = marks(svg, cls)
        assert len(drawn) == len(points) > 0, cls
        values = [(float(e.get("data-macs")), float(e.get("data-accuracy"))) for e in drawn]
        assert sorted(values) == sorted((p.macs, p.accuracy) for p in points)
        for (macs_a, acc_a), a in zip(values, drawn):
            xa, ya = centre(a)
            assert 0 < xa < width and 0 < ya < height
            for (macs_b, acc_b), b in zip(values, drawn):
                xb, yb = centre(b)
                assert (macs_a < macs_b) == (xa < xb - 1e-6) or macs_a == macs_b
                assert (acc_a > acc_b) == (ya < yb - 1e-6) or acc_a == acc_b


def test_the_curve_puts_every_series_on_one_scale(engine_points):
    trajectory, chosen, baseline = engine_points
    svg = parse(charts.accuracy_curve(trajectory, chosen, baseline))
    by_value = {}
    for e in marks(svg, "point"):
        by_value.setdefault((e.get("data-macs"), e.get("data-accuracy")), set()).add(
            tuple(round(c, 1) for c in centre(e))
        )
    assert all(len(places) == 1 for places in by_value.values())  # the same figures land on the same pixel
    full = max(baseline, key=lambda p: p.macs)
    assert full.macs == max(p.macs for p in trajectory)  # uniform x1.0 is the trajectory's first step
    labels = [t.text for t in svg.iter(f"{SVG}text")]
    assert "MACs" in labels and "accuracy (%)" in labels and "uniform width" in labels


def test_the_baseline_is_the_engines_and_is_drawn_from_the_database_alone(app, finished_search, settings):
    """The worker stores the engine's uniform baseline with the search; the page needs no work folder."""
    import json
    from pathlib import Path

    from app.dashboard.search_page import accuracy_chart
    from store.tables import TrajectoryStep

    result = json.loads((Path(settings.work_root) / finished_search["id"] / "result.json").read_text())
    with app.state.sessionmaker() as session:
        search = session.get(Search, finished_search["id"])
        assert search.uniform == result["uniform"] and len(search.uniform) == BASELINE_POINTS
        steps = list(session.query(TrajectoryStep).filter(TrajectoryStep.search_id == search.id))
        search.workdir = "/nonexistent/work/folder"  # an API host without the shared folder; not committed
        svg = parse(accuracy_chart(search, steps))
        session.rollback()
    assert len(marks(svg, "baseline-point")) == BASELINE_POINTS


def test_an_empty_curve_says_so():
    assert "No trajectory yet" in charts.accuracy_curve([])


def test_channel_bars_scale_each_layer_against_its_full_width(admin, finished_search):
    full = finished_search["summary"]["channels"]
    channels = admin.get(finished_search["results"][-1]["config"]).json()["channels"]
    svg = parse(charts.channel_bars(channels, full))
    layers = marks(svg, "layer")
    assert [g.get("data-layer") for g in layers] == list(full)
    assert {g.get("data-layer"): int(g.get("data-channels")) for g in layers} == channels
    heights = {g.get("data-layer"): [float(r.get("height")) for r in g if r.tag == f"{SVG}rect"] for g in layers}
    per_channel = max(h[0] for h in heights.values()) / max(full.values())
    for layer, (full_bar, kept_bar) in heights.items():
        assert full_bar == pytest.approx(full[layer] * per_channel, abs=0.11)
        assert kept_bar == pytest.approx(channels[layer] * per_channel, abs=0.11)
    with pytest.raises(ValueError, match="not in the full network"):
        charts.channel_bars({"no.such.layer": 8}, full)
