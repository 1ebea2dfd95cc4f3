"""Latency of any channel configuration from a per-layer table measured once per device.

Every node of the traced network (conv, BN, activation, addition, concatenation, pooling,
classifier) is timed on its own, as the plain op the exported slim model runs, over the channel
counts it depends on: a conv's or linear layer's input and output channels, any other op's
channels.  A count is a linear form of group widths (`models.layout.Layout.count`: a
concatenation's count sums the groups it joins), so the table predicts from widths alone.  Each
count is timed at ``max_levels`` configurations: every group it depends on at the same step of its
greedy bin ladder (for one group, its ladder thinned to ``max_levels`` points); between them the
table interpolates (bilinearly for a dense conv, whose cost is close to ``a*cin*cout + b*cin +
c*cout + d``, which bilinear interpolation reproduces exactly).

A configuration's latency is ``scale * (sum over nodes) + overhead_ms``.  An op timed alone runs
with its input and weights hot in cache; inside a whole forward it does not, which scales the sum
up (1.1-1.3x for MobileNetV2 at 224 px), and small inputs add a constant (module-call overhead of
the containers).  Both are fitted by least squares on end-to-end measurements of the full, the
smallest and a few random configurations.  Everything is timed with a steady allocator
(`engine.allocator`): under glibc's adaptive thresholds an op's cost depends on the sizes of the
whole model (page faults), and no per-op table adds up (15-20% error instead of 2-4%).

A table depends on the architecture and its shape (width multiplier, classes, bounds), the input
size, the batch size, the device and the torch build; it is cached on disk under a key of all of
these, so a worker measures it once.  `measure_model` times an exported slim model end to end,
which is what `bench/bench_search.py` checks the predictions against.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import fx, nn

from engine.allocator import steady_allocator
from engine.greedy import bin_size
from engine.partial_forward import PartialForward, layouts_of
from models import export_slim
from models.layout import Layout
from models.ops import BN_TYPES, SlimConv2d, SlimLinear
from models.space import ChannelSpace, Group
from models.supernet import Supernet

TABLE_FORMAT = "autoslim.latency-table/3"
Widths = dict[str, int]


@dataclass
class Timing:
    """How each op is timed: the fastest of ``blocks`` blocks, each at least ``block_s`` long.

    The minimum, not the mean: on a shared machine other processes only ever add time, so the
    fastest block is the best estimate of the op's own cost (the `timeit` convention).
    """

    blocks: int = 5
    block_s: float = 0.002
    warmup: int = 2
    threads: int | None = None  # CPU threads while timing (None: torch's current setting)


@dataclass
class NodeCost:
    """Measured milliseconds of one node over the grid of the channel counts it depends on (0-2).

    Each axis is a count as a linear form of group widths: ``{"fixed": k, "terms": {group: m}}``
    counts ``k + sum(m * width)``.
    """

    axes: list[dict]
    levels: list[list[int]]  # ascending counts per axis
    ms: float | list  # scalar, list, or list of lists, indexed like ``levels``

    def at(self, widths: Widths) -> float:
        counts = [axis_count(axis, widths) for axis in self.axes]
        if not counts:
            return float(self.ms)
        if len(counts) == 1:
            lo, hi, t = _bracket(self.levels[0], counts[0])
            return (1 - t) * self.ms[lo] + t * self.ms[hi]
        (a0, a1, ta), (b0, b1, tb) = (_bracket(lv, c) for lv, c in zip(self.levels, counts))
        rows = [(1 - tb) * self.ms[a][b0] + tb * self.ms[a][b1] for a in (a0, a1)]
        return (1 - ta) * rows[0] + ta * rows[1]


def axis_count(axis: dict, widths: Widths) -> int:
    return axis["fixed"] + sum(m * widths[g] for g, m in axis["terms"].items())


def axis_of(layouts: list[Layout]) -> dict:
    """The channel count of these layouts together, as a linear form of group widths."""
    terms: dict[str, int] = {}
    for layout in layouts:
        for group, m in layout.multiplicity.items():
            terms[group] = terms.get(group, 0) + m
    return {"fixed": sum(layout.fixed_count for layout in layouts), "terms": terms}


@dataclass
class LatencyTable:
    key: dict
    nodes: dict[str, NodeCost]
    scale: float = 1.0
    overhead_ms: float = 0.0
    fit: dict = field(default_factory=dict)  # the end-to-end measurements scale and overhead came from

    def layers_ms(self, widths: Widths) -> float:
        """The sum of the per-node costs at ``widths`` (each op timed alone)."""
        return sum(cost.at(widths) for cost in self.nodes.values())

    def predict(self, widths: Widths) -> float:
        """Predicted end-to-end milliseconds of the slim model at ``widths``."""
        return self.scale * self.layers_ms(widths) + self.overhead_ms

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": TABLE_FORMAT, **asdict(self)}))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> "LatencyTable":
        data = json.loads(Path(path).read_text())
        if data.get("format") != TABLE_FORMAT:
            raise ValueError(f"{path} is not a latency table")
        nodes = {name: NodeCost(**cost) for name, cost in data["nodes"].items()}
        return cls(data["key"], nodes, data["scale"], data["overhead_ms"], data.get("fit", {}))


def _bracket(levels: list[int], width: int) -> tuple[int, int, float]:
    """Indices of the grid points around ``width`` and its fraction of the way between them."""
    if width <= levels[0]:
        return 0, 0, 0.0
    for i in range(1, len(levels)):
        if width <= levels[i]:
            return i - 1, i, (width - levels[i - 1]) / (levels[i] - levels[i - 1])
    return len(levels) - 1, len(levels) - 1, 0.0


# ---- measuring ----------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    """What identifies a device's speed: the GPU model, or the CPU model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} x{torch.get_num_threads()} threads"


def table_key(supernet: Supernet, device: torch.device, batch_size: int, bins: int, max_levels: int,
              timing: Timing) -> dict:
    with cpu_threads(timing.threads):
        name = device_name(device)
    return {"net": supernet.spec.to_dict(), "batch_size": batch_size, "device": name,
            "torch": torch.__version__, "bins": bins, "max_levels": max_levels}


def grid(group: Group, bins: int, max_levels: int) -> list[int]:
    """The group's greedy ladder (full, one bin less, ..., min), thinned to ``max_levels``, ascending."""
    ladder, width = [group.max], group.max
    while width > group.min:
        width = max(group.min, (width - bin_size(group, bins)) // group.divisor * group.divisor)
        ladder.append(width)
    ladder = ladder[::-1]
    if len(ladder) <= max_levels:
        return ladder
    picks = sorted({round(i * (len(ladder) - 1) / (max_levels - 1)) for i in range(max_levels)})
    return [ladder[i] for i in picks]


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` CPU threads (a table is only valid for the thread count it was timed with)."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _timed_ms(run: Callable[[], object], device: torch.device, timing: Timing) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode(), cpu_threads(timing.threads):
        for _ in range(timing.warmup):
            run()
        sync()
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < timing.block_s or calls == 0:  # size one block
            run()
            calls += 1
        sync()
        per_block = []
        for _ in range(timing.blocks):
            start = time.perf_counter()
            for _ in range(calls):
                run()
            sync()
            per_block.append((time.perf_counter() - start) / calls)
    return 1000.0 * min(per_block)


def measure_model(model: nn.Module, input_size: int, batch_size: int = 1, device: torch.device | str = "cpu",
                  timing: Timing | None = None) -> float:
    """End-to-end milliseconds of one forward pass of ``model`` (eval mode, no autograd, steady allocator)."""
    steady_allocator()
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.randn(batch_size, 3, input_size, input_size, device=device)
    return _timed_ms(lambda: model(x), device, timing or end_to_end_timing(Timing()))


def end_to_end_timing(per_op: Timing) -> Timing:
    """Whole-model timing to match a per-op timing: same threads, more and longer blocks (a whole
    forward is long enough to be interrupted often on a busy machine; the fastest block is kept)."""
    return Timing(blocks=3 * per_op.blocks, block_s=25 * per_op.block_s, warmup=per_op.warmup, threads=per_op.threads)


class _NodeBench:
    """Times one graph node as the plain op the exported model runs, at any configuration."""

    def __init__(self, graph: PartialForward, node: fx.Node, input_shapes: dict[fx.Node, Any],
                 device: torch.device) -> None:
        self.graph, self.node, self.shapes, self.device = graph, node, input_shapes, device
        self.module = graph.modules.get(node.target) if node.op == "call_module" else None
        self.axes = _axes(graph, node, self.module)

    def time(self, widths: Widths, timing: Timing) -> float:
        inputs = {n: self._input(shape, self.graph.layouts.get(n), widths) for n, shape in self.shapes.items()}
        op = self._op(widths)
        args, kwargs = fx.node.map_arg((self.node.args, self.node.kwargs), lambda n: inputs[n])
        if self.node.op == "call_method":
            return _timed_ms(lambda: getattr(args[0], self.node.target)(*args[1:], **kwargs), self.device, timing)
        return _timed_ms(lambda: op(*args, **kwargs), self.device, timing)

    def _input(self, shape: Any, layout: Any, widths: Widths) -> Any:
        """A random input at ``widths`` (a tuple for a chunk's parts), shaped like the full one."""
        if isinstance(shape, tuple) and shape and not isinstance(shape[0], int):
            return tuple(self._input(s, lay, widths) for s, lay in zip(shape, layout))
        channels = shape[1] if not isinstance(layout, Layout) else layout.count(widths)
        return torch.randn(shape[0], channels, *shape[2:], device=self.device)

    def _op(self, widths: Widths) -> Callable:
        module = self.module
        if isinstance(module, SlimConv2d):
            layer = self.graph.supernet.space.layers[self.node.target]
            cin, cout = layer.inputs.count(widths), layer.outputs.count(widths)
            op = nn.Conv2d(cin, cout, module.kernel_size, module.stride, module.padding, module.dilation,
                           cin if module.depthwise else module.groups, bias=module.bias is not None)
        elif isinstance(module, BN_TYPES):
            op = nn.BatchNorm2d(self.graph.supernet.space.layers[self.node.target].inputs.count(widths))
        elif isinstance(module, SlimLinear):
            layer = self.graph.supernet.space.layers[self.node.target]
            op = nn.Linear(layer.inputs.count(widths), layer.outputs.count(widths), bias=module.bias is not None)
        elif module is not None:
            return copy.deepcopy(module).eval()  # stateless: activations, pooling, dropout, flatten
        else:
            return self.node.target
        return op.to(self.device).eval()


def _axes(graph: PartialForward, node: fx.Node, module: nn.Module | None) -> list[dict]:
    """A dense conv or linear layer depends on its input and output counts; any other node on its
    output's count (its input's, when it outputs no tensor)."""
    if isinstance(module, (SlimConv2d, SlimLinear)) and not getattr(module, "depthwise", False):
        layer = graph.supernet.space.layers[node.target]
        axes = [axis_of([layer.inputs]), axis_of([layer.outputs])]
        if set(axes[0]["terms"]) & set(axes[1]["terms"]):
            return [axis_of([layer.inputs, layer.outputs])]
    else:
        layouts = layouts_of(graph.layouts.get(node)) or [lay for n in node.all_input_nodes
                                                          for lay in layouts_of(graph.layouts.get(n))][:1]
        axes = [axis_of(layouts)]
    return [axis for axis in axes if axis["terms"]]


def _levels(axis: dict, space: ChannelSpace, bins: int, max_levels: int) -> list[Widths]:
    """Configurations of the axis's groups, narrowest first: every group at the same step of its
    thinned ladder (for one group, exactly its thinned ladder)."""
    ladders = {g: grid(space.groups[g], bins, max_levels) for g in axis["terms"]}
    steps = max(len(ladder) for ladder in ladders.values())
    configs = []
    for k in range(steps):
        configs.append({g: ladder[round(k * (len(ladder) - 1) / max(steps - 1, 1))] for g, ladder in ladders.items()})
    return configs


def _input_shapes(graph: PartialForward, input_size: int, batch_size: int) -> dict[fx.Node, dict[fx.Node, Any]]:
    """Shapes of every node's inputs at full width (one forward, node by node)."""
    shapes, env = {}, graph.start(torch.zeros(batch_size, 3, input_size, input_size))
    was_training, widths = graph.supernet.training, graph.supernet.widths
    graph.supernet.eval().set_full()
    with torch.no_grad():
        for i in range(1, graph.end):
            node = graph.nodes[i]
            shapes[node] = {n: _shape(env[n]) for n in node.all_input_nodes}
            env = graph.advance(env, i, i + 1)
    graph.supernet.train(was_training).set_widths(widths)
    return shapes


def _shape(value: Any) -> Any:
    return tuple(_shape(v) for v in value) if isinstance(value, (tuple, list)) else tuple(value.shape)


def measure_table(supernet: Supernet, device: torch.device | str = "cpu", batch_size: int = 1, bins: int = 10,
                  max_levels: int = 5, timing: Timing | None = None,
                  progress: Callable[[float], None] | None = None, fit_configs: int = 8) -> LatencyTable:
    """Time every node over its grid, then fit scale and overhead on ``fit_configs + 2`` whole models.

    Timings are taken with a steady allocator (`engine.allocator`), which stays on for the process.
    """
    steady_allocator()
    device, timing = torch.device(device), timing or Timing()
    graph = PartialForward(supernet)
    shapes = _input_shapes(graph, supernet.spec.input_size, batch_size)
    full = supernet.space.full()
    nodes: dict[str, NodeCost] = {}
    runnable = [n for n in graph.nodes if n.op in ("call_module", "call_function", "call_method")]
    for done, node in enumerate(runnable):
        bench = _NodeBench(graph, node, shapes[node], device)
        configs = [_levels(axis, supernet.space, bins, max_levels) for axis in bench.axes]
        flat = [bench.time({**full, **{k: v for part in point for k, v in part.items()}}, timing)
                for point in itertools.product(*configs)]
        counts = [[axis_count(axis, c) for c in cs] for axis, cs in zip(bench.axes, configs)]
        nodes[node.name] = NodeCost(bench.axes, counts, _reshape(flat, [len(c) for c in counts]))
        if progress:
            progress((done + 1) / len(runnable))
    table = LatencyTable(table_key(supernet, device, batch_size, bins, max_levels, timing), nodes)
    _fit_whole_models(table, supernet, device, batch_size, timing, fit_configs)
    return table


def _reshape(flat: list[float], sizes: list[int]) -> float | list:
    if not sizes:
        return flat[0]
    if len(sizes) == 1:
        return flat
    return [flat[i * sizes[1] : (i + 1) * sizes[1]] for i in range(sizes[0])]


FIT_SEED = 20_251_124
"""Seeds the random configurations the fit measures (apart from the benchmark's, which start at 0)."""


def _fit_whole_models(table: LatencyTable, supernet: Supernet, device: torch.device, batch_size: int,
                      timing: Timing, fit_configs: int) -> None:
    """Fit ``measured = scale * layers + overhead`` on end-to-end timings of whole slim models."""
    space, generator = supernet.space, torch.Generator().manual_seed(FIT_SEED)
    configs = {"full": space.full(), "smallest": space.smallest(),
               **{f"random-{i}": space.random(generator) for i in range(fit_configs)}}
    table.fit = {name: {"measured_ms": measure_model(export_slim(supernet, widths), supernet.spec.input_size,
                                                     batch_size, device, end_to_end_timing(timing)),
                        "sum_of_layers_ms": table.layers_ms(widths)} for name, widths in configs.items()}
    table.scale, table.overhead_ms = _line(
        [(m["sum_of_layers_ms"], m["measured_ms"]) for m in table.fit.values()],
        lowest=table.layers_ms(space.smallest()))


def _line(points: list[tuple[float, float]], lowest: float) -> tuple[float, float]:
    """``(slope, intercept)`` of measured on summed milliseconds, positive down to ``lowest``.

    ``lowest`` is the smallest configuration's sum, the least any configuration sums to.  The
    least-squares line when it rises and stays positive there; else (all sums nearly equal, as on
    tiny inputs where only the constant matters, or timing noise) a constant offset; else a pure
    ratio, which no measurement can drive below zero.
    """
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.mean(xs), statistics.mean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread > 1e-12 * max(mean_x * mean_x, 1e-12):
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
        if slope > 0 and slope * lowest + mean_y - slope * mean_x > 0:
            return slope, mean_y - slope * mean_x
    if lowest + mean_y - mean_x > 0:
        return 1.0, mean_y - mean_x
    return mean_y / mean_x, 0.0


def cached_table(supernet: Supernet, cache_dir: Path, device: torch.device | str = "cpu", batch_size: int = 1,
                 bins: int = 10, max_levels: int = 5, timing: Timing | None = None,
                 progress: Callable[[float], None] | None = None) -> tuple[LatencyTable, bool]:
    """The table for this network and device from ``cache_dir``, measured and stored if missing.

    Returns ``(table, was_cached)``.
    """
    device, timing = torch.device(device), timing or Timing()
    key = {**table_key(supernet, device, batch_size, bins, max_levels, timing), "format": TABLE_FORMAT}
    path = Path(cache_dir) / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]}.json"
    if path.is_file():
        return LatencyTable.load(path), True
    table = measure_table(supernet, device, batch_size, bins, max_levels, timing, progress)
    table.save(path)
    return table, False
