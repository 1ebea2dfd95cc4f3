"""Checks a latency table made elsewhere (`autoslim profile` on a device) before a search trusts it.

Each failure is a `TableError` that names where in the file the problem is (``loc``, as in the
API's 422 answers) and what to do about it:

- `read_table`: the bytes are one complete JSON document (a truncated upload fails here), shaped
  like a table of this format: the key's fields, per node its channel-count axes, levels of
  ascending counts per axis and finite, non-negative milliseconds of the levels' shape, a positive
  scale;
- `check_graph`: the table describes the network its key names: one cost per node of the traced
  graph, over exactly the channel counts that node depends on (`engine.latency.node_axes`), each
  spanning the counts the network can have;
- `check_search`: it is the network a search runs (architecture, classes, input size, width
  multiplier, divisor, lower bound) and has a timing at every count the search visits with its
  bins (`engine.latency.axis_levels` over whole ladders), so no step of the search is a guess
  between levels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from engine.latency import TABLE_FORMAT, LatencyTable, NodeCost, axis_count, axis_levels, node_axes, runnable_nodes
from engine.partial_forward import PartialForward
from models.supernet import NetSpec, Supernet

Loc = tuple[str | int, ...]
KEY_TEXT = ("device", "runtime", "version", "provider")
KEY_COUNTS = ("batch_size", "bins", "threads")


class TableError(ValueError):
    """A latency table that cannot serve a search; ``loc`` is the path of the offending part of the file."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(f"latency table {'.'.join(map(str, loc)) or 'file'}: {message}")
        self.loc, self.message = loc, message


def load_table_file(path: str | Path) -> LatencyTable:
    """The table in the file ``path``, checked by `read_table`."""
    try:
        return read_table(Path(path).read_bytes())
    except FileNotFoundError:
        raise TableError((), f"{path} does not exist") from None
    except IsADirectoryError:
        raise TableError((), f"{path} is a folder, not a table file") from None


def read_table(raw: bytes | str) -> LatencyTable:
    """Parse and check the structure of a table file's content."""
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise TableError((), "not UTF-8 text; a latency table is the JSON file `autoslim profile` writes") from None
    except json.JSONDecodeError as err:
        raise TableError(
            (),
            f"not a complete JSON document ({err.msg} at line {err.lineno} column {err.colno}"
            f" of {len(raw)} bytes): a truncated or damaged file?",
        ) from None
    return parse_table(data)


def parse_table(data: Any) -> LatencyTable:
    """A `LatencyTable` from JSON data, every field checked."""
    if not isinstance(data, dict):
        raise TableError((), "a latency table is a JSON object")
    if data.get("format") != TABLE_FORMAT:
        raise TableError(
            ("format",),
            f"{data.get('format')!r} is not {TABLE_FORMAT!r}; write the table with this version's `autoslim profile`",
        )
    key = _object(data, "key", ("key",))
    for name in KEY_TEXT:
        _typed(key, name, str, ("key", name))
    for name in KEY_COUNTS:
        if not _typed(key, name, int, ("key", name)) >= 1:
            raise TableError(("key", name), f"must be at least 1, not {key[name]}")
    if not isinstance(_object(key, "net", ("key", "net")).get("arch"), str):
        raise TableError(("key", "net", "arch"), "names no architecture")
    scale, overhead = _number(data, "scale"), _number(data, "overhead_ms")
    if not scale > 0:
        raise TableError(("scale",), f"must be positive, not {scale}")
    nodes = _object(data, "nodes", ("nodes",))
    if not nodes:
        raise TableError(("nodes",), "holds no node")
    fit = data.get("fit", {})
    if not isinstance(fit, dict):
        raise TableError(("fit",), "must be an object")
    return LatencyTable(key, {name: _node(cost, ("nodes", name)) for name, cost in nodes.items()}, scale, overhead, fit)


def _node(cost: Any, loc: Loc) -> NodeCost:
    if not isinstance(cost, dict):
        raise TableError(loc, "must be an object with axes, levels and ms")
    axes, levels = cost.get("axes"), cost.get("levels")
    if not (isinstance(axes, list) and len(axes) <= 2):
        raise TableError((*loc, "axes"), "must be a list of at most 2 channel counts")
    for i, axis in enumerate(axes):
        if not (
            isinstance(axis, dict)
            and _count(axis.get("fixed"), 0)
            and isinstance(axis.get("terms"), dict)
            and axis["terms"]
            and all(isinstance(g, str) and _count(m, 1) for g, m in axis["terms"].items())
        ):
            raise TableError((*loc, "axes", i), 'must be {"fixed": count, "terms": {group: multiplicity}}')
    if not (isinstance(levels, list) and len(levels) == len(axes)):
        raise TableError((*loc, "levels"), f"must hold one list of levels per axis ({len(axes)})")
    for i, level in enumerate(levels):
        if not (isinstance(level, list) and level and all(_count(c, 1) for c in level) and level == sorted(set(level))):
            raise TableError((*loc, "levels", i), "must be ascending positive channel counts")
    _check_ms(cost.get("ms"), [len(level) for level in levels], (*loc, "ms"))
    return NodeCost(axes, levels, cost["ms"])


def _count(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_ms(ms: Any, sizes: list[int], loc: Loc) -> None:
    """``ms`` is a finite non-negative number, or nested lists of them of ``sizes``."""
    if not sizes:
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms < 0:
            raise TableError(loc, f"must be a finite, non-negative number of milliseconds, not {ms!r}")
        return
    if not isinstance(ms, list) or len(ms) != sizes[0]:
        raise TableError(loc, f"must be a list of {sizes[0]} entries, one per level")
    for i, value in enumerate(ms):
        _check_ms(value, sizes[1:], (*loc, i))


def _object(data: dict, name: str, loc: Loc) -> dict:
    return _typed(data, name, dict, loc)


def _typed(data: dict, name: str, kind: type, loc: Loc) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TableError(
            loc, "is missing" if value is None else f"must be {'an object' if kind is dict else kind.__name__}"
        )
    return value


def _number(data: dict, name: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TableError((name,), f"must be a finite number, not {value!r}")
    return float(value)


def table_network(table: LatencyTable) -> Supernet:
    """The network the table's key describes, built (a key no network matches is a `TableError`)."""
    try:
        return Supernet(NetSpec.from_dict(table.key["net"]))
    except (KeyError, TypeError, ValueError, NotImplementedError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise TableError(("key", "net"), f"describes no network autoslim can build: {message}") from None


def check_graph(table: LatencyTable, supernet: Supernet) -> None:
    """One cost per node of ``supernet``'s graph, over the counts it depends on, spanning their range."""
    graph, arch, space = PartialForward(supernet), supernet.spec.arch, supernet.space
    expected = {node.name: node_axes(graph, node) for node in runnable_nodes(graph)}
    missing = [name for name in expected if name not in table.nodes]
    if missing:
        raise TableError(
            ("nodes",),
            f"has no timing of {len(missing)} of the {len(expected)} nodes of {arch} "
            f"(the first: {missing[0]!r}); a table of another network or autoslim version?",
        )
    extra = [name for name in table.nodes if name not in expected]
    if extra:
        raise TableError(("nodes", extra[0]), f"is no node of {arch}'s graph")
    for name, axes in expected.items():
        cost = table.nodes[name]
        if cost.axes != axes:
            raise TableError(
                ("nodes", name, "axes"), f"{arch}'s node {name} depends on {_names(axes)}, not {_names(cost.axes)}"
            )
        for i, (axis, level) in enumerate(zip(axes, cost.levels)):
            low, high = axis_count(axis, space.smallest()), axis_count(axis, space.full())
            if (level[0], level[-1]) != (low, high):
                raise TableError(
                    ("nodes", name, "levels", i),
                    f"spans {level[0]}..{level[-1]} channels of {_names([axis])}, which spans {low}..{high}",
                )


def check_search(table: LatencyTable, spec: NetSpec, bins: int) -> None:
    """The table is of the network ``spec`` describes and times every count a search with ``bins`` visits."""
    claimed = table_network(table).spec.to_dict()
    for name, ours in spec.to_dict().items():
        if ours != claimed[name]:
            raise TableError(("key", "net", name), f"the table is for {name} {claimed[name]}, the search runs {ours}")
    supernet = Supernet(spec)
    check_graph(table, supernet)
    for name, cost in table.nodes.items():
        for i, (axis, level) in enumerate(zip(cost.axes, cost.levels)):
            visited = [axis_count(axis, c) for c in axis_levels(axis, supernet.space, bins, None)]
            absent = [count for count in visited if count not in level]
            if absent:
                raise TableError(
                    ("nodes", name, "levels", i),
                    f"has no timing at {', '.join(map(str, absent))} "
                    f"channels of {_names([axis])}, which a search with {bins} bins visits (the table "
                    f"was profiled with {table.key['bins']} bins); profile with --bins {bins}",
                )


def _names(axes: list[dict]) -> str:
    """``[features.1.conv.0.0]``, ``[2 x layer1.0.conv1 + 16]``: channel counts as a reader names them."""

    def one(axis: dict) -> str:
        terms = [g if m == 1 else f"{m} x {g}" for g, m in axis["terms"].items()]
        return " + ".join(terms + ([str(axis["fixed"])] if axis["fixed"] else []))

    return "[" + ", ".join(one(axis) for axis in axes) + "]"
