"""The latency table's mechanics on a tiny network (no timing bounds: timings are the bench's job)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch

import engine.latency as latency
from engine.allocator import steady_allocator
from engine.latency import LatencyTable, NodeCost, cached_table, greedy_ladder, measure_model, measure_table
from engine.latency_runtimes import Timing, TorchRuntime
from engine.partial_forward import PartialForward
from models import build_supernet, export_slim

FAST = Timing(blocks=2, block_s=0.0002, warmup=1)
CPU = TorchRuntime("cpu")


@pytest.fixture(scope="module")
def net():
    return build_supernet("mobilenet_v2", 10, 8, 0.35).eval()


@pytest.fixture(scope="module")
def table(net) -> LatencyTable:
    return measure_table(net, CPU, batch_size=1, bins=4, max_levels=3, timing=FAST)


def test_every_op_is_timed_over_the_groups_it_depends_on(net, table):
    graph = PartialForward(net)
    runnable = [n for n in graph.nodes if n.op in ("call_module", "call_function", "call_method")]
    assert set(table.nodes) == {n.name for n in runnable}
    space = net.space
    for node in runnable:
        cost = table.nodes[node.name]
        layer = space.layers.get(node.target)
        groups = [list(axis["terms"]) for axis in cost.axes]
        if layer is not None and layer.kind == "conv" and not layer.depthwise and not layer.inputs.fixed:
            assert groups == [[layer.source], [layer.group]]  # a dense conv: input and output channels
        elif layer is not None and layer.kind == "conv":
            assert groups == [[layer.group]]
        for axis, levels in zip(cost.axes, cost.levels):  # one group each: counts are its thinned ladder
            assert axis == {"fixed": 0, "terms": {next(iter(axis["terms"])): 1}}
            assert levels == greedy_ladder(space.groups[next(iter(axis["terms"]))], 4, 3)
        values = [cost.ms] if not cost.axes else cost.ms if len(cost.axes) == 1 else sum(cost.ms, [])
        assert all(v > 0 for v in values)


def test_the_greedy_ladder_is_thinned_with_both_ends(net):
    group = max(net.space.groups.values(), key=lambda g: g.max)
    ladder = greedy_ladder(group, 4, 100)
    assert ladder[0] == group.min and ladder[-1] == group.max and ladder == sorted(set(ladder))
    thin = greedy_ladder(group, 4, 3)
    assert len(thin) == min(3, len(ladder)) and thin[0] == group.min and thin[-1] == group.max


def test_prediction_is_the_scaled_sum_of_layers_plus_the_fitted_overhead(net, table):
    assert set(table.fit) == {"full", "smallest", *(f"random-{i}" for i in range(8))}
    for name in ("full", "smallest"):
        widths = getattr(net.space, name)()
        exact = sum(cost.at(widths) for cost in table.nodes.values())
        assert table.predict(widths) == pytest.approx(table.scale * exact + table.overhead_ms)
        assert table.fit[name]["sum_of_layers_ms"] == pytest.approx(exact)
    # A least-squares line with an intercept leaves residuals that cancel out over the fitted models.
    residuals = [
        m["measured_ms"] - (table.scale * m["sum_of_layers_ms"] + table.overhead_ms) for m in table.fit.values()
    ]
    assert sum(residuals) == pytest.approx(0.0, abs=1e-9)
    assert table.scale > 0 and table.predict(net.space.smallest()) > 0


def test_whole_model_line_recovers_a_scale_and_falls_back_to_a_constant_or_a_ratio():
    assert latency._line([(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)], lowest=1.0) == pytest.approx((2.0, 1.0))
    # Falling measurements (noise) or a line below zero at the smallest model: a constant offset only.
    assert latency._line([(1.0, 5.0), (2.0, 3.0)], lowest=1.0) == pytest.approx((1.0, 2.5))
    assert latency._line([(2.0, 1.0), (4.0, 9.0)], lowest=1.0) == pytest.approx((1.0, 2.0))
    assert latency._line([(2.0, 3.0), (2.0, 3.5)], lowest=2.0) == pytest.approx((1.0, 1.25))
    # Parts that sum far above the whole (and fall): a ratio, never a negative prediction.
    assert latency._line([(10.0, 2.0), (12.0, 1.0)], lowest=5.0) == pytest.approx((1.5 / 11, 0.0))


def test_interpolation_is_exact_at_grid_points_and_linear_between():
    a, b = {"fixed": 0, "terms": {"a": 1}}, {"fixed": 0, "terms": {"b": 1}}
    cost = NodeCost([a, b], [[8, 16, 32], [8, 24]], [[1.0, 2.0], [3.0, 5.0], [7.0, 9.0]])
    assert cost.at({"a": 16, "b": 24}) == 5.0
    assert cost.at({"a": 24, "b": 8}) == pytest.approx(5.0)  # halfway between 3 and 7
    assert cost.at({"a": 12, "b": 16}) == pytest.approx(0.5 * (1.5 + 4.0))
    line = NodeCost([a], [[8, 16]], [1.0, 3.0])
    assert line.at({"a": 12}) == 2.0 and NodeCost([], [], 0.25).at({}) == 0.25
    joined = NodeCost([{"fixed": 4, "terms": {"a": 1, "b": 2}}], [[12, 36]], [1.0, 3.0])  # a concatenation
    assert joined.at({"a": 8, "b": 6}) == pytest.approx(2.0)  # 4 + 8 + 12 = 24 channels: halfway


def test_tables_are_cached_per_device_and_batch_size(net, tmp_path: Path, monkeypatch):
    first, cached = cached_table(net, tmp_path, CPU, batch_size=1, bins=4, max_levels=2, timing=FAST)
    assert not cached and len(list(tmp_path.iterdir())) == 1
    monkeypatch.setattr(latency, "measure_table", lambda *a, **k: pytest.fail("a cached table was measured again"))
    again, cached = cached_table(net, tmp_path, CPU, batch_size=1, bins=4, max_levels=2, timing=FAST)
    assert cached and again.predict(net.space.full()) == first.predict(net.space.full())
    monkeypatch.undo()
    other, cached = cached_table(net, tmp_path, CPU, batch_size=2, bins=4, max_levels=2, timing=FAST)
    assert not cached and other.key["batch_size"] == 2 and len(list(tmp_path.iterdir())) == 2


def test_end_to_end_measurement_runs_the_exported_model(net):
    widths = net.space.random(torch.Generator().manual_seed(0))
    assert measure_model(export_slim(net, widths), 8, 1, CPU, FAST) > 0


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_latency_is_measured_with_glibc_thresholds_fixed():
    assert steady_allocator() is True
