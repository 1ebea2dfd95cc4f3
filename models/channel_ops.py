"""How each kind of graph node treats channels: one handler per op kind (`handler_for`).

A handler reads the layouts of a node's inputs (`models.slots`) and returns its output's: the same
layout for a channel-wise op, a new segment for a weight layer, a joined one for a concatenation,
sliced ones for a chunk, a permuted one for a shuffle.  Handlers also record what the slim model
needs to keep working with the user's own forward code: ties (residual additions, gates, the equal
parts of a chunk, a grouped conv or a shuffle), cuts, and fixed channels (literal slices, logits).

Supporting a new op is one entry in the tables at the bottom.  An op without an entry raises
`Unmodelled` when it reads channels that could be removed; on fixed channels (the image, the
logits) any op is fine, because those never change.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from models.slots import SlotTable

CONST = "const"
"""Value of a tensor that carries no produced channels (a parameter read with get_attr, a scalar)."""

Handler = Callable[[fx.Node, "OpContext"], Any]


class Unmodelled(Exception):
    """The op's effect on channels is not known; the message says what it does."""


@dataclass
class LayerRecord:
    kind: str
    inputs: np.ndarray
    outputs: np.ndarray
    geometry: dict


@dataclass
class OpContext:
    """State of one analysis: the slot table, node values, weight layers and mixing nodes."""

    table: SlotTable
    modules: dict[str, nn.Module]
    keep: tuple[str, ...] = ()
    values: dict[fx.Node, Any] = field(default_factory=dict)
    layers: dict[str, LayerRecord] = field(default_factory=dict)
    mixing: set[fx.Node] = field(default_factory=set)
    _pinned: list[np.ndarray] = field(default_factory=list)

    # ---- reading inputs ---------------------------------------------------------------------
    def value(self, arg: Any) -> Any:
        return self.values.get(arg) if isinstance(arg, fx.Node) else None

    def layout(self, node: fx.Node, position: int = 0) -> np.ndarray:
        """The layout of the node's ``position``-th argument, which must be a tensor with channels."""
        value = self.value(node.args[position])
        if not isinstance(value, np.ndarray):
            raise Unmodelled("its input carries no channel layout")
        return value

    def tensor_layouts(self, node: fx.Node) -> list[np.ndarray]:
        return [v for v in (self.value(a) for a in node.all_input_nodes) if isinstance(v, np.ndarray)]

    # ---- facts --------------------------------------------------------------------------------
    def pin(self, layout: np.ndarray) -> None:
        """These channels are never removed."""
        self.table.fix(layout)
        self._pinned.append(np.asarray(layout))

    def known_fixed(self, layout: np.ndarray) -> bool:
        """Every slot of ``layout`` is already known to be fixed (the image, logits, pinned)."""
        if not len(layout):
            return True
        pinned = np.concatenate(self._pinned) if self._pinned else np.zeros(0, np.int64)
        return bool(np.isin(layout, pinned).all())

    def fresh_fixed(self, node: fx.Node) -> Any:
        """A new fixed layout shaped like the node's output (for ops on fixed channels)."""
        meta = node.meta.get("tensor_meta")
        if several(meta):
            return tuple(self._fixed_of(m, node.name) for m in meta)
        return self._fixed_of(meta, node.name)

    def _fixed_of(self, meta: Any, owner: str) -> Any:
        shape = getattr(meta, "shape", None)
        if shape is None or len(shape) < 2:
            return CONST
        slots = self.table.new_segment(owner, int(shape[1]))
        self.pin(slots)
        return slots

    def in_kept_module(self, node: fx.Node) -> bool:
        if not self.keep:
            return False
        path = module_path(node)
        return any(path == k or path.startswith(k + ".") for k in self.keep)


def module_path(node: fx.Node) -> str:
    """The innermost module a node was traced in (``""`` at the top level)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack), "") if stack else ""


def several(meta: Any) -> bool:
    """Whether a node's shape metadata describes several tensors (a chunk's parts)."""
    return isinstance(meta, (tuple, list)) and not hasattr(meta, "shape")


def out_shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def in_shape(node: fx.Node, position: int = 0) -> tuple[int, ...] | None:
    arg = node.args[position] if len(node.args) > position else None
    return out_shape(arg) if isinstance(arg, fx.Node) else None


def _arg(node: fx.Node, position: int, name: str, default: Any) -> Any:
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(name, default)


def _normal_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


# ---- the handlers ---------------------------------------------------------------------------------
def placeholder(node: fx.Node, ctx: OpContext) -> Any:
    from models.graph import IMAGE

    shape = out_shape(node)
    if shape is None or len(shape) < 2:
        return None
    slots = ctx.table.new_segment(IMAGE, int(shape[1]))
    ctx.pin(slots)
    return slots


def constant(node: fx.Node, ctx: OpContext) -> Any:
    return CONST


def not_a_tensor(node: fx.Node, ctx: OpContext) -> Any:
    return None


def output(node: fx.Node, ctx: OpContext) -> Any:
    for arg in node.all_input_nodes:
        _pin_all(ctx.value(arg), ctx)
    ctx.mixing.add(node)
    return None


def _pin_all(value: Any, ctx: OpContext) -> None:
    if isinstance(value, np.ndarray):
        ctx.pin(value)
    elif isinstance(value, tuple):
        for v in value:
            _pin_all(v, ctx)


def pinned(node: fx.Node, ctx: OpContext) -> Any:
    """A node inside a module the user keeps whole: its inputs and outputs never change."""
    for layout in ctx.tensor_layouts(node):
        ctx.pin(layout)
    ctx.mixing.add(node)
    module = ctx.modules.get(node.target) if node.op == "call_module" else None
    result = ctx.fresh_fixed(node)
    if module is not None and _weight_kind(module) is not None:
        inputs = ctx.layout(node)
        _record(ctx, node, module, inputs, result if _weight_kind(module) != "bn" else inputs)
        return inputs if _weight_kind(module) == "bn" else result
    return result


def channelwise(node: fx.Node, ctx: OpContext) -> Any:
    """Output channel c depends on input channel c only (activations, pooling, dropout, BN...)."""
    layout = ctx.layout(node)
    shape = out_shape(node)
    if shape is not None and len(shape) >= 2 and shape[1] != len(layout):
        raise Unmodelled(f"it maps {len(layout)} channels to {shape[1]}")
    return layout


def elementwise(node: fx.Node, ctx: OpContext) -> Any:
    """add/sub/mul/div/maximum/...: operands with the output's channels are tied position by position;
    a broadcast operand (one channel, or none) ties nothing; a constant indexed by channel pins them."""
    shape = out_shape(node)
    channels = shape[1] if shape is not None and len(shape) >= 2 else None
    tied, constant_per_channel = [], False
    for arg in node.all_input_nodes:
        value, arg_shape = ctx.value(arg), out_shape(arg)
        if arg_shape is None or channels is None:
            continue
        padded = (1,) * (len(shape) - len(arg_shape)) + arg_shape
        if padded[1] != channels or channels == 1:
            continue
        if isinstance(value, np.ndarray):
            tied.append(value)
        else:
            constant_per_channel = True
    for other in tied[1:]:
        ctx.table.tie(tied[0], other)
    if not tied:
        return ctx.fresh_fixed(node) if channels is not None else CONST
    if constant_per_channel:
        ctx.pin(tied[0])
    return tied[0]


def concat(node: fx.Node, ctx: OpContext) -> Any:
    tensors = list(_arg(node, 0, "tensors", []))
    shape = out_shape(node)
    dim = _normal_dim(_arg(node, 1, "dim", 0), len(shape))
    parts = [ctx.value(t) if isinstance(ctx.value(t), np.ndarray) else _fixed_like(t, ctx) for t in tensors]
    if dim == 1:
        return np.concatenate(parts)
    for other in parts[1:]:
        ctx.table.tie(parts[0], other)
    return parts[0]


def _fixed_like(node: fx.Node, ctx: OpContext) -> np.ndarray:
    value = ctx._fixed_of(node.meta.get("tensor_meta"), node.name)
    if not isinstance(value, np.ndarray):
        raise Unmodelled("it joins a tensor without channels")
    return value


def chunk(node: fx.Node, ctx: OpContext) -> Any:
    """Equal parts of the channels (the user's code splits the slim tensor evenly): parts are tied."""
    layout, shapes = ctx.layout(node), [tuple(m.shape) for m in node.meta["tensor_meta"]]
    dim = _normal_dim(_arg(node, 2, "dim", 0), len(shapes[0]))
    if dim != 1:
        return tuple(layout for _ in shapes)
    sizes = [s[1] for s in shapes]
    if len(set(sizes)) != 1:
        ctx.pin(layout)  # uneven chunks: sizes follow the channel count in ways that would shift
    parts = _slice(layout, sizes, ctx)
    if len(set(sizes)) == 1:
        for part in parts[1:]:
            ctx.table.tie(parts[0], part)
    return tuple(parts)


def split(node: fx.Node, ctx: OpContext) -> Any:
    """Literal split sizes stay literal in the slim model: the channels are kept whole."""
    layout, shapes = ctx.layout(node), [tuple(m.shape) for m in node.meta["tensor_meta"]]
    dim = _normal_dim(_arg(node, 2, "dim", 0), len(shapes[0]))
    if dim != 1:
        return tuple(layout for _ in shapes)
    ctx.pin(layout)
    return tuple(_slice(layout, [s[1] for s in shapes], ctx))


def _slice(layout: np.ndarray, sizes: list[int], ctx: OpContext) -> list[np.ndarray]:
    parts, start = [], 0
    for size in sizes:
        ctx.table.cut(layout, start)
        parts.append(layout[start : start + size])
        start += size
    return parts


def getitem(node: fx.Node, ctx: OpContext) -> Any:
    value, index = ctx.value(node.args[0]), node.args[1]
    if isinstance(value, tuple):
        return value[index]
    if not isinstance(value, np.ndarray):
        return ctx.fresh_fixed(node) if out_shape(node) is not None else None
    items = index if isinstance(index, tuple) else (index,)
    if Ellipsis in items or None in items:
        raise Unmodelled("it indexes with ... or None")
    if len(items) < 2 or items[1] == slice(None):
        if isinstance(items[0], int):
            raise Unmodelled("it indexes the batch dimension away")
        return value
    ctx.pin(value)  # a literal channel index or slice stays literal in the slim model
    return ctx.fresh_fixed(node)


def flatten(node: fx.Node, ctx: OpContext) -> Any:
    start = _arg(node, 1, "start_dim", 1 if node.op == "call_module" else 0)
    if node.op == "call_module":
        start = ctx.modules[node.target].start_dim
    return _reshaped(node, ctx, forced_flatten=_normal_dim(start, len(in_shape(node))) == 1)


def reshape(node: fx.Node, ctx: OpContext) -> Any:
    return _reshaped(node, ctx)


def _reshaped(node: fx.Node, ctx: OpContext, forced_flatten: bool = False) -> Any:
    """A view that keeps the channel dimension (squeeze, unsqueeze of spatial dims) passes the
    layout on; one that folds channels and spatial positions into features (flatten from dim 1)
    repeats every slot once per spatial position, channel-major."""
    layout, before, after = ctx.layout(node), in_shape(node), out_shape(node)
    if after[0] != before[0]:
        raise Unmodelled("it reshapes the batch dimension")
    if len(after) >= 2 and after[1] == before[1] and not forced_flatten:
        return layout
    if len(after) == 2 and after[1] == math.prod(before[1:]):
        return np.repeat(layout, math.prod(before[2:]))
    raise Unmodelled(f"it reshapes {before} to {after}, which moves channels")


def transpose(node: fx.Node, ctx: OpContext) -> Any:
    before, after = in_shape(node), out_shape(node)
    name = _name(node)
    if name == "permute":
        dims = node.args[1:] if not isinstance(node.args[1], (tuple, list)) else node.args[1]
        moved = [_normal_dim(d, len(before)) for d in dims][:2] != [0, 1]
    else:
        dims = {_normal_dim(d, len(before)) for d in node.args[1:3]}
        moved = bool(dims & {0, 1})
    if moved:
        raise Unmodelled(f"it moves the channel dimension ({before} -> {after})")
    return ctx.layout(node)


def reduction(node: fx.Node, ctx: OpContext) -> Any:
    """mean/sum/amax over spatial dims is channel-wise; over the channel dim it mixes channels."""
    before = in_shape(node)
    dims = _arg(node, 1, "dim", None)
    if dims is None:
        raise Unmodelled("it reduces over every dimension")
    dims = {_normal_dim(d, len(before)) for d in (dims if isinstance(dims, (tuple, list)) else (dims,))}
    if 1 in dims or 0 in dims:
        raise Unmodelled("it reduces over the channel or batch dimension")
    layout = ctx.layout(node)
    meta = node.meta.get("tensor_meta")
    return tuple(layout for _ in meta) if several(meta) else layout


def softmax(node: fx.Node, ctx: OpContext) -> Any:
    if node.op == "call_module":
        dim = ctx.modules[node.target].dim
    else:
        dim = _arg(node, 1, "dim", None)
    if dim is None or _normal_dim(dim, len(in_shape(node))) == 1:
        raise Unmodelled("it normalises across channels")
    return ctx.layout(node)


def shuffle(node: fx.Node, ctx: OpContext) -> Any:
    """Channel shuffle with g groups: the g parts are tied (the slim tensor splits evenly), and the
    output interleaves them."""
    layout = ctx.layout(node)
    groups = ctx.modules[node.target].groups if node.op == "call_module" else _arg(node, 1, "groups", None)
    if not isinstance(groups, int) or len(layout) % groups:
        raise Unmodelled(f"shuffle groups {groups!r} do not divide {len(layout)} channels")
    parts = _slice(layout, [len(layout) // groups] * groups, ctx)
    for part in parts[1:]:
        ctx.table.tie(parts[0], part)
    return np.stack(parts).T.reshape(-1)


def pad(node: fx.Node, ctx: OpContext) -> Any:
    amounts = _arg(node, 1, "pad", ())
    if len(amounts) > 2 * (len(in_shape(node)) - 2):
        raise Unmodelled("it pads the channel dimension")
    return ctx.layout(node)


def weight_layer(node: fx.Node, ctx: OpContext) -> Any:
    module = ctx.modules[node.target]
    kind = _weight_kind(module)
    inputs = ctx.layout(node)
    if kind == "bn":
        _record(ctx, node, module, inputs, inputs)
        return inputs
    if kind == "linear":
        if len(in_shape(node)) != 2 and not ctx.known_fixed(inputs):
            raise Unmodelled("a linear layer on a tensor with more than two dimensions")
        outputs = ctx.table.new_segment(node.target, module.out_features)
    else:
        outputs = _conv_outputs(node, module, inputs, ctx)
    if not (kind == "conv" and _depthwise(module)):
        ctx.mixing.add(node)
    _record(ctx, node, module, inputs, outputs)
    return outputs


def _conv_outputs(node: fx.Node, module: nn.Conv2d, inputs: np.ndarray, ctx: OpContext) -> np.ndarray:
    """A depthwise conv's output is its input; a grouped conv's g input parts and g output parts
    are each tied (every group of the slim conv keeps the same number of channels)."""
    if _depthwise(module):
        return inputs
    outputs = ctx.table.new_segment(node.target, module.out_channels)
    if module.groups > 1:
        for layout in (inputs, outputs):
            parts = _slice(layout, [len(layout) // module.groups] * module.groups, ctx)
            for part in parts[1:]:
                ctx.table.tie(parts[0], part)
    return outputs


def _depthwise(module: nn.Module) -> bool:
    return module.groups > 1 and module.groups == module.in_channels == module.out_channels


def _weight_kind(module: nn.Module) -> str | None:
    from models.ops import SwitchableBatchNorm2d

    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, (nn.BatchNorm2d, SwitchableBatchNorm2d)):
        return "bn"
    if isinstance(module, nn.Linear):
        return "linear"
    return None


def _record(ctx: OpContext, node: fx.Node, module: nn.Module, inputs: np.ndarray, outputs: np.ndarray) -> None:
    kind = _weight_kind(module)
    geometry: dict[str, Any] = {"in_full": len(inputs), "out_full": len(outputs)}
    if kind == "conv":
        shape = out_shape(node)
        geometry.update(
            kernel=tuple(module.kernel_size),
            groups=module.groups,
            depthwise=_depthwise(module),
            bias=module.bias is not None,
            out_hw=(int(shape[-2]), int(shape[-1])),
        )
    elif kind == "linear":
        geometry.update(bias=module.bias is not None)
    ctx.layers[node.target] = LayerRecord(kind, inputs, outputs, geometry)


# ---- dispatch -------------------------------------------------------------------------------------
def handler_for(node: fx.Node, ctx: OpContext) -> Handler:
    if node.op == "placeholder":
        return placeholder
    if node.op == "output":
        return output
    if node.op == "get_attr":
        return constant
    if ctx.in_kept_module(node):
        return pinned
    if node.meta.get("tensor_meta") is None:
        return not_a_tensor
    if node.op == "call_module":
        module = ctx.modules[node.target]
        if _weight_kind(module) is not None:
            return weight_layer
        found = next((h for kinds, h in MODULE_HANDLERS if isinstance(module, kinds)), None)
    else:
        found = FUNCTION_HANDLERS.get(node.target) if node.op == "call_function" else None
        found = found or NAME_HANDLERS.get(_name(node))
    return found or _unknown


def _unknown(node: fx.Node, ctx: OpContext) -> Any:
    """An op without a handler is fine on fixed channels only."""
    if all(ctx.known_fixed(layout) for layout in ctx.tensor_layouts(node)):
        ctx.mixing.add(node)
        return ctx.fresh_fixed(node)
    raise Unmodelled("autoslim does not know how this op treats channels")


def _name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.GELU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Mish,
    nn.PReLU,
    nn.Hardtanh,
    nn.Softplus,
    nn.CELU,
    nn.SELU,
)
_POOLING = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Upsample,
    nn.UpsamplingBilinear2d,
    nn.UpsamplingNearest2d,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
)
_DROPOUT = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity, nn.InstanceNorm2d)

MODULE_HANDLERS: list[tuple[type | tuple[type, ...], Handler]] = [
    (_ACTIVATIONS + _POOLING + _DROPOUT, channelwise),
    (nn.Flatten, flatten),
    (nn.ChannelShuffle, shuffle),
    ((nn.Softmax, nn.LogSoftmax), softmax),
]
"""Leaf modules by type (nn.PReLU is channel-wise only with one shared slope; see `weight_layer`)."""

NAME_HANDLERS: dict[str, Handler] = {
    **dict.fromkeys(
        [
            "relu",
            "relu_",
            "relu6",
            "hardswish",
            "hardsigmoid",
            "sigmoid",
            "sigmoid_",
            "tanh",
            "silu",
            "gelu",
            "elu",
            "leaky_relu",
            "mish",
            "hardtanh",
            "softplus",
            "dropout",
            "dropout2d",
            "alpha_dropout",
            "max_pool2d",
            "avg_pool2d",
            "adaptive_avg_pool2d",
            "adaptive_max_pool2d",
            "interpolate",
            "upsample",
            "stochastic_depth",
            "drop_path",
            "contiguous",
            "clone",
            "float",
            "half",
            "to",
            "type_as",
            "abs",
            "neg",
            "clamp",
            "clamp_min",
            "clamp_max",
            "exp",
            "sqrt",
            "rsqrt",
            "square",
            "pow",
            "detach",
            "instance_norm",
            "hardswish_",
            "silu_",
            "sigmoid_",
        ],
        channelwise,
    ),
    **dict.fromkeys(
        [
            "add",
            "add_",
            "iadd",
            "sub",
            "sub_",
            "isub",
            "mul",
            "mul_",
            "imul",
            "truediv",
            "div",
            "div_",
            "itruediv",
            "maximum",
            "minimum",
            "where",
            "addcmul",
        ],
        elementwise,
    ),
    **dict.fromkeys(["cat", "concat", "concatenate"], concat),
    "chunk": chunk,
    **dict.fromkeys(["split", "split_with_sizes", "tensor_split", "unbind"], split),
    "getitem": getitem,
    "flatten": flatten,
    **dict.fromkeys(["view", "reshape", "squeeze", "unsqueeze", "unflatten"], reshape),
    **dict.fromkeys(["transpose", "permute", "swapaxes", "movedim"], transpose),
    **dict.fromkeys(["mean", "sum", "amax", "amin", "std", "var", "max", "min", "logsumexp"], reduction),
    **dict.fromkeys(["softmax", "log_softmax"], softmax),
    **dict.fromkeys(["channel_shuffle", "native_channel_shuffle"], shuffle),
    "pad": pad,
}
"""Functions and methods by name (``operator.add``, ``torch.add`` and ``x.add`` all read ``add``)."""

FUNCTION_HANDLERS: dict[Any, Handler] = {operator.getitem: getitem, F.pad: pad, torch.flatten: flatten}
"""Functions whose name alone is ambiguous."""
