"""Latency of any channel configuration from a per-layer table measured once per device and runtime.

Every node of the traced network (conv, BN, activation, addition, concatenation, pooling,
classifier) is timed on its own, as the plain op the exported slim model runs, over the channel
counts it depends on: a conv's or linear layer's input and output channels, any other op's
channels.  A count is a linear form of group widths (`models.layout.Layout.count`: a
concatenation's count sums the groups it joins), so the table predicts from widths alone.  Each
count is timed at the configurations of every group it depends on at the same step of its greedy
bin ladder (for one group, every width the search can visit), or at ``max_levels`` of them; between
them the table interpolates (bilinearly for a dense conv, whose cost is close to ``a*cin*cout + b*cin +
c*cout + d``, which bilinear interpolation reproduces exactly).

A configuration's latency is ``scale * (sum over nodes) + overhead_ms``.  An op timed alone runs
with its input and weights hot in cache; inside a whole forward it does not, which scales the sum
up (1.1-1.3x for MobileNetV2 at 224 px), and small inputs add a constant (module-call or
session-run overhead).  Both are fitted by least squares on end-to-end measurements of the full,
the smallest and a few random configurations.  Torch timings are taken with a steady allocator
(`engine.allocator`): under glibc's adaptive thresholds an op's cost depends on the sizes of the
whole model (page faults), and no per-op table adds up (15-20% error instead of 2-4%).

The timing is a runtime's (`engine.latency_runtimes`): eager torch, how a worker measures its own
device, or ONNX Runtime with an execution provider, how `autoslim profile` measures the device a
user deploys to.  A runtime that fuses a conv with the BN, activation and residual addition after
it (ONNX Runtime does) has them timed as one unit (`units`).  The table is one object and one file
format either way; its ``key`` records the network (architecture, width multiplier, classes,
input size, bounds), the batch size, the bins, the device, the runtime with its version, provider
and thread count, and the torch build.  A worker caches its tables on disk under that key, so it
measures each once; `engine.latency_check` validates a table made elsewhere against the network a
search runs.  `measure_model` times an exported slim model end to end, which is what
`bench/bench_search.py` and `bench/bench_device_latency.py` check the predictions against.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import operator
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from engine.allocator import steady_allocator
from engine.atomic import write_json
from engine.greedy import narrower
from engine.latency_runtimes import Runtime, Timing, TorchRuntime, end_to_end_timing
from engine.partial_forward import PartialForward, layouts_of
from models import export_slim
from models.layout import Layout
from models.ops import BN_TYPES, SlimConv2d, SlimLinear
from models.space import ChannelSpace, Group
from models.supernet import Supernet

TABLE_FORMAT = "autoslim.latency-table/4"
"""/4: the key names the runtime (torch or onnxruntime, its version, provider and threads) apart
from the device model.  Older tables are not read: a worker measures again, a user profiles again."""
Widths = dict[str, int]


@dataclass
class NodeCost:
    """Measured milliseconds of one node over the levels of the channel counts it depends on (0-2).

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

    def describe(self) -> dict[str, str]:
        """What its predictions are figures of: ``device``, and ``runtime`` with version, provider,
        threads and batch size."""
        key = self.key
        threads = f"{key['threads']} thread{'s' if key['threads'] != 1 else ''}"
        return {
            "device": key["device"],
            "runtime": f"{key['runtime']} {key['version']} ({key['provider']}, {threads}, batch {key['batch_size']})",
        }

    def to_dict(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyTable:
        """A table from its JSON form; `engine.latency_check.parse_table` checks one made elsewhere first."""
        if data.get("format") != TABLE_FORMAT:
            raise ValueError(f"not a {TABLE_FORMAT} table (format {data.get('format')!r})")
        nodes = {name: NodeCost(**cost) for name, cost in data["nodes"].items()}
        return cls(data["key"], nodes, data["scale"], data["overhead_ms"], data.get("fit", {}))

    def save(self, path: Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> LatencyTable:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _bracket(levels: list[int], width: int) -> tuple[int, int, float]:
    """Indices of the levels around ``width`` and its fraction of the way between them."""
    if width <= levels[0]:
        return 0, 0, 0.0
    for i in range(1, len(levels)):
        if width <= levels[i]:
            return i - 1, i, (width - levels[i - 1]) / (levels[i] - levels[i - 1])
    return len(levels) - 1, len(levels) - 1, 0.0


# ---- what a table is measured over ---------------------------------------------------------------
def table_key(supernet: Supernet, runtime: Runtime, batch_size: int, bins: int, max_levels: int | None) -> dict:
    return {
        "net": supernet.spec.to_dict(),
        "batch_size": batch_size,
        "bins": bins,
        "max_levels": max_levels,
        **runtime.describe(),
        "torch": torch.__version__,
    }


def greedy_ladder(group: Group, bins: int, max_levels: int | None = None) -> list[int]:
    """The group's greedy ladder (full, one bin less, ..., min), thinned to ``max_levels``, ascending.

    The ladder holds every width greedy slimming with ``bins`` bins can give the group (`engine.greedy`).
    """
    ladder: list[int] = [group.max]
    while (width := narrower(group, ladder[-1], bins)) is not None:
        ladder.append(width)
    ladder = ladder[::-1]
    if max_levels is None or len(ladder) <= max_levels:
        return ladder
    picks = sorted({round(i * (len(ladder) - 1) / (max_levels - 1)) for i in range(max_levels)})
    return [ladder[i] for i in picks]


def runnable_nodes(graph: PartialForward) -> list[fx.Node]:
    """The nodes that compute something: a table holds one cost per node."""
    return [n for n in graph.nodes if n.op in ("call_module", "call_function", "call_method")]


def node_axes(graph: PartialForward, node: fx.Node) -> list[dict]:
    """A dense conv or linear layer depends on its input and output counts; any other node on its
    output's count (its input's, when it outputs no tensor)."""
    module = graph.modules.get(node.target) if node.op == "call_module" else None
    if isinstance(module, (SlimConv2d, SlimLinear)) and not getattr(module, "depthwise", False):
        layer = graph.supernet.space.layers[node.target]
        axes = [axis_of([layer.inputs]), axis_of([layer.outputs])]
        if set(axes[0]["terms"]) & set(axes[1]["terms"]):
            return [axis_of([layer.inputs, layer.outputs])]
    else:
        layouts = (
            layouts_of(graph.layouts.get(node))
            or [lay for n in node.all_input_nodes for lay in layouts_of(graph.layouts.get(n))][:1]
        )
        axes = [axis_of(layouts)]
    return [axis for axis in axes if axis["terms"]]


def axis_levels(axis: dict, space: ChannelSpace, bins: int, max_levels: int | None) -> list[Widths]:
    """Configurations of the axis's groups, narrowest first: every group at the same step of its
    thinned ladder (for one group, exactly its thinned ladder)."""
    ladders = {g: greedy_ladder(space.groups[g], bins, max_levels) for g in axis["terms"]}
    steps = max(len(ladder) for ladder in ladders.values())
    configs = []
    for k in range(steps):
        configs.append({g: ladder[round(k * (len(ladder) - 1) / max(steps - 1, 1))] for g, ladder in ladders.items()})
    return configs


_ADDS = {operator.add, operator.iadd, torch.add}
_FUSED_MODULES = (*BN_TYPES, nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh, nn.Hardsigmoid)
_FUSED_FUNCTIONS = {*_ADDS, torch.relu, nn.functional.relu, nn.functional.relu6}
"""What ONNX export and ONNX Runtime run inside the conv before them: BN (folded into the weights on
export), activations and a residual addition (fused kernels; on x86 an NCHWc conv takes the sum)."""


def units(graph: PartialForward, nodes: list[fx.Node], fuses: bool) -> dict[fx.Node, list[fx.Node]]:
    """Each node that is timed, with the nodes timed together with it.

    A runtime that ``fuses`` runs a conv's BN, activations and one residual addition in the conv's
    kernel (the first conv to reach an addition takes it), so timing them alone would count work the deployed model never does (on MobileNetV2
    at 32 px with ONNX Runtime: 22% mean error).  A node joins the conv before it when it is the
    only user of the unit so far and its count is one the conv already depends on, so the unit's
    cost has the conv's axes.  Eager torch (``fuses`` False) times every node alone.
    """
    out: dict[fx.Node, list[fx.Node]] = {}
    absorbed: set[fx.Node] = set()
    for node in nodes:
        if node in absorbed:
            continue
        out[node] = unit = [node]
        if not (fuses and node.op == "call_module" and isinstance(graph.modules[node.target], SlimConv2d)):
            continue
        axes = node_axes(graph, node)
        while len(unit[-1].users) == 1:
            (user,) = unit[-1].users
            if (
                user in absorbed
                or not (_fusable(graph, user) and all(a in axes for a in node_axes(graph, user)))
                or (_is_add(user) and any(map(_is_add, unit)))
            ):
                break
            unit.append(user)
            absorbed.add(user)
    return out


def _fusable(graph: PartialForward, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(graph.modules[node.target], _FUSED_MODULES)
    return node.op == "call_function" and node.target in _FUSED_FUNCTIONS


def _is_add(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in _ADDS


# ---- measuring ----------------------------------------------------------------------------------
def measure_model(
    model: nn.Module, input_size: int, batch_size: int = 1, runtime: Runtime | None = None, timing: Timing | None = None
) -> float:
    """End-to-end milliseconds of one forward pass of ``model`` (default: eager torch on the CPU)."""
    runtime = runtime or TorchRuntime("cpu")
    return runtime.time_model(model, input_size, batch_size, timing or end_to_end_timing(Timing()))


class _Unit(nn.Module):
    """Graph nodes run in order as one module of the values they take from outside: what a runtime
    times (eagerly, or exported first)."""

    def __init__(self, nodes: list[fx.Node], ops: list[Callable]) -> None:
        super().__init__()
        self.nodes, self.ops = nodes, nn.ModuleList(op if isinstance(op, nn.Module) else _Call(op) for op in ops)
        self.inputs = external_inputs(nodes)

    def forward(self, *inputs: Any) -> Any:
        values = dict(zip(self.inputs, inputs))
        for node, op in zip(self.nodes, self.ops):
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
            if node.op == "call_method":
                values[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
            else:
                values[node] = op(*args, **kwargs)
        return values[self.nodes[-1]]


class _Call(nn.Module):
    """A plain function (``operator.add``, ``torch.cat``) as a module, so a unit holds modules only."""

    def __init__(self, function: Callable) -> None:
        super().__init__()
        self.function = function

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)


def external_inputs(nodes: list[fx.Node]) -> list[fx.Node]:
    """The values a run of ``nodes`` needs from outside them, in order of first use."""
    inside = set(nodes)
    return list(dict.fromkeys(n for node in nodes for n in node.all_input_nodes if n not in inside))


class _UnitBench:
    """Builds a unit of graph nodes (`units`) as the plain ops the exported model runs, at any configuration."""

    def __init__(self, graph: PartialForward, nodes: list[fx.Node], shapes: dict[fx.Node, dict[fx.Node, Any]]) -> None:
        self.graph, self.nodes = graph, nodes
        self.shapes = {n: shape for node in nodes for n, shape in shapes[node].items()}  # full-width input shapes
        self.axes = node_axes(graph, nodes[0])  # the other nodes of a unit add no axis (`units`)

    def unit(self, widths: Widths) -> tuple[nn.Module, tuple[Any, ...]]:
        """The nodes' ops at ``widths`` and random inputs of the matching shapes."""
        module = _Unit(self.nodes, [self._op(node, widths) for node in self.nodes])
        return module, tuple(self._input(self.shapes[n], self.graph.layouts.get(n), widths) for n in module.inputs)

    def _input(self, shape: Any, layout: Any, widths: Widths) -> Any:
        """A random input at ``widths`` (a tuple for a chunk's parts), shaped like the full one."""
        if isinstance(shape, tuple) and shape and not isinstance(shape[0], int):
            return tuple(self._input(s, lay, widths) for s, lay in zip(shape, layout))
        channels = shape[1] if not isinstance(layout, Layout) else layout.count(widths)
        return torch.randn(shape[0], channels, *shape[2:])

    def _op(self, node: fx.Node, widths: Widths) -> Callable:
        module = self.graph.modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, (SlimConv2d, BN_TYPES, SlimLinear)):
            layer = self.graph.supernet.space.layers[node.target]
            cin, cout = layer.inputs.count(widths), layer.outputs.count(widths)
        if isinstance(module, SlimConv2d):
            return nn.Conv2d(
                cin,
                cout,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                cin if module.depthwise else module.groups,
                bias=module.bias is not None,
            )
        if isinstance(module, BN_TYPES):
            return nn.BatchNorm2d(cin)
        if isinstance(module, SlimLinear):
            return nn.Linear(cin, cout, bias=module.bias is not None)
        if module is not None:
            return copy.deepcopy(module)  # stateless: activations, pooling, dropout, flatten
        return node.target


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


def measure_table(
    supernet: Supernet,
    runtime: Runtime | None = None,
    batch_size: int = 1,
    bins: int = 10,
    max_levels: int | None = 5,
    timing: Timing | None = None,
    progress: Callable[[float], None] | None = None,
    fit_configs: int = 8,
) -> LatencyTable:
    """Time every node over its levels, then fit scale and overhead on ``fit_configs + 2`` whole models.

    ``runtime`` defaults to eager torch on the CPU; ``max_levels`` None times every step of the
    ladders (what `autoslim profile` does, so every width a search visits is a measured point).
    Timings are taken with a steady allocator (`engine.allocator`), which stays on for the process.
    """
    steady_allocator()
    runtime, timing = runtime or TorchRuntime("cpu"), timing or Timing()
    graph = PartialForward(supernet)
    shapes = _input_shapes(graph, supernet.spec.input_size, batch_size)
    full = supernet.space.full()
    nodes: dict[str, NodeCost] = {}
    timed = units(graph, runnable_nodes(graph), runtime.fuses)
    for done, (head, members) in enumerate(timed.items()):
        bench = _UnitBench(graph, members, shapes)
        configs = [axis_levels(axis, supernet.space, bins, max_levels) for axis in bench.axes]
        flat = [
            runtime.time_op(*bench.unit({**full, **{k: v for part in point for k, v in part.items()}}), timing)
            for point in itertools.product(*configs)
        ]
        counts = [[axis_count(axis, c) for c in cs] for axis, cs in zip(bench.axes, configs)]
        nodes[head.name] = NodeCost(bench.axes, counts, _reshape(flat, [len(c) for c in counts]))
        for member in members[1:]:  # run inside the head's kernel: no time of its own
            axes = node_axes(graph, member)
            levels = [counts[bench.axes.index(axis)] for axis in axes]
            nodes[member.name] = NodeCost(
                axes, levels, _reshape([0.0] * math.prod(map(len, levels)), list(map(len, levels)))
            )
        if progress:
            progress((done + 1) / len(timed))
    table = LatencyTable(table_key(supernet, runtime, batch_size, bins, max_levels), nodes)
    _fit_whole_models(table, supernet, runtime, batch_size, timing, fit_configs)
    return table


def _reshape(flat: list[float], sizes: list[int]) -> float | list:
    if not sizes:
        return flat[0]
    if len(sizes) == 1:
        return flat
    return [flat[i * sizes[1] : (i + 1) * sizes[1]] for i in range(sizes[0])]


FIT_SEED = 20_251_124
"""Seeds the random configurations the fit measures (apart from the benchmark's, which start at 0)."""
FIT_ROUNDS = 2
"""Each whole model of the fit is timed this many times, in turn with the others, and the fastest kept."""


def _fit_whole_models(
    table: LatencyTable, supernet: Supernet, runtime: Runtime, batch_size: int, timing: Timing, fit_configs: int
) -> None:
    """Fit ``measured = scale * layers + overhead`` on end-to-end timings of whole slim models."""
    space, generator = supernet.space, torch.Generator().manual_seed(FIT_SEED)
    configs = {
        "full": space.full(),
        "smallest": space.smallest(),
        **{f"random-{i}": space.random(generator) for i in range(fit_configs)},
    }
    whole, models = end_to_end_timing(timing), {name: export_slim(supernet, widths) for name, widths in configs.items()}
    measured = {name: float("inf") for name in configs}
    for _ in range(FIT_ROUNDS):  # rounds apart in time: a busy spell of the machine spoils one round, not all
        for name, model in models.items():
            measured[name] = min(measured[name], runtime.time_model(model, supernet.spec.input_size, batch_size, whole))
    table.fit = {
        name: {"measured_ms": measured[name], "sum_of_layers_ms": table.layers_ms(widths)}
        for name, widths in configs.items()
    }
    table.scale, table.overhead_ms = _line(
        [(m["sum_of_layers_ms"], m["measured_ms"]) for m in table.fit.values()],
        lowest=table.layers_ms(space.smallest()),
    )


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


def cached_table(
    supernet: Supernet,
    cache_dir: Path,
    runtime: Runtime | None = None,
    batch_size: int = 1,
    bins: int = 10,
    max_levels: int | None = 5,
    timing: Timing | None = None,
    progress: Callable[[float], None] | None = None,
) -> tuple[LatencyTable, bool]:
    """The table for this network, device and runtime from ``cache_dir``, measured and stored if missing.

    Returns ``(table, was_cached)``.
    """
    runtime = runtime or TorchRuntime("cpu")
    key = {**table_key(supernet, runtime, batch_size, bins, max_levels), "format": TABLE_FORMAT}
    path = Path(cache_dir) / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]}.json"
    if path.is_file():
        return LatencyTable.load(path), True
    table = measure_table(supernet, runtime, batch_size, bins, max_levels, timing, progress)
    table.save(path)
    return table, False
