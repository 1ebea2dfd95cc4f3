"""Starting a supernet from trained weights: the state dict of the full network, read safely.

A user who already trained their network hands its ``state_dict()`` (saved with ``torch.save``, or
as ``.safetensors``); the supernet's full width then computes exactly what their model computes,
and supernet training (with `engine.spec.PRETRAINED_TRAIN`'s short recipe) teaches the narrower
sub-networks from it.  Files are read without unpickling code (``weights_only=True``).

Keys are the network's own module names (``features.0.0.weight``: the plain model's, which are
the supernet's less its ``net.`` prefix).  Every tensor must match the network's shape, except the
classifier head: when the weights were trained for another class count, the head keeps its fresh
initialisation and the caller is told (`Loaded.replaced`).  Any other mismatch is a
`WeightsError` naming the first key at fault and both shapes, so the API can reject a search at
submit time from the shapes alone (`network_shapes` builds the network on the meta device).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from engine.calibrate import evaluate
from engine.data import DataSplits, as_batches
from engine.spec import ReportFn, SearchSpec
from models import NetSpec, Supernet

Shapes = dict[str, list[int]]


class WeightsError(ValueError):
    """Weights that cannot be read, or that do not fit the network; ``key`` names the tensor at fault."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class Loaded:
    """What loading did: the head keys left at their fresh initialisation, with both class counts."""

    replaced: list[str] = field(default_factory=list)
    weights_classes: int | None = None
    network_classes: int | None = None

    def head_message(self) -> str:
        layers = sorted({key.rpartition(".")[0] for key in self.replaced})
        return (
            f"head {', '.join(layers)} replaced (fresh initialisation): the weights are for "
            f"{self.weights_classes} classes, this dataset has {self.network_classes}"
        )


# ---- reading ------------------------------------------------------------------------------------
def weights_format(head: bytes, size: int) -> str:
    """``safetensors`` when a file of ``size`` bytes opens with a safetensors header, else ``pt`` (torch.save)."""
    if len(head) >= 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"
    return "pt"


def read_state_dict(source: Path | bytes) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pt`` (``torch.save(model.state_dict())``) or ``.safetensors`` file, on the CPU.

    A training checkpoint that holds the state dict under ``state_dict`` or ``model`` is unwrapped.
    """
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    if weights_format(raw[:9], len(raw)) == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            return _tensors(load(raw))
        except (SafetensorError, ValueError) as err:
            raise WeightsError(f"not a readable safetensors file: {err}") from None
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling untrusted bytes fails in many ways (IndexError, KeyError, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(
            f"not a state dict torch can load with weights_only=True (save model.state_dict(), not the model): {first}"
        ) from None
    return _tensors(state)


def _tensors(state: Any) -> dict[str, torch.Tensor]:
    if isinstance(state, Mapping) and not _all_tensors(state):
        inner = [state[k] for k in ("state_dict", "model") if isinstance(state.get(k), Mapping)]
        state = inner[0] if len(inner) == 1 else state
    if not isinstance(state, Mapping) or not state:
        raise WeightsError(f"expected a state dict (names to tensors), got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"entry {key!r} holds a {type(value).__name__}, not a tensor; save model.state_dict()", str(key)
            )
    return dict(state)


def _all_tensors(state: Mapping) -> bool:
    return all(isinstance(v, torch.Tensor) for v in state.values())


def shapes_of(state: Mapping[str, torch.Tensor]) -> Shapes:
    return {key: list(tensor.shape) for key, tensor in state.items()}


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- matching -----------------------------------------------------------------------------------
def head_keys(supernet: Supernet) -> set[str]:
    """Parameter names of the classifier head: the layers whose output is the class count itself."""
    heads = [
        name
        for name, layer in supernet.space.layers.items()
        if layer.kind in ("conv", "linear") and layer.outputs.fixed and layer.out_full == supernet.spec.num_classes
    ]
    return {f"{name}.{p}" for name in heads for p in ("weight", "bias")}


def plan_load(expected: Mapping[str, Sequence[int]], given: Mapping[str, Sequence[int]], head: set[str]) -> Loaded:
    """Check ``given`` shapes against the network's ``expected`` ones; raise `WeightsError` for the first
    key that is missing, extra or of another shape (a head of another class count is replaced)."""
    loaded = Loaded()
    for key, shape in expected.items():
        if key not in given:
            if key.endswith("num_batches_tracked"):  # older checkpoints lack it; it never affects outputs
                continue
            raise WeightsError(f"{key} (shape {list(shape)}) is missing from the weights", key)
        have = list(given[key])
        if have == list(shape):
            continue
        if key in head and have[1:] == list(shape[1:]):
            loaded.replaced.append(key)
            loaded.weights_classes, loaded.network_classes = have[0], shape[0]
            continue
        raise WeightsError(f"{key} has shape {have} in the weights but {list(shape)} in the network", key)
    extra = [key for key in given if key not in expected]
    if extra:
        raise WeightsError(
            f"{extra[0]} (shape {list(given[extra[0]])}) in the weights is not in the network "
            f"({len(extra)} such key(s))",
            extra[0],
        )
    return loaded


def network_keys(supernet: Supernet) -> Shapes:
    """The network's tensor names (its plain model's: no ``net.`` prefix) and shapes."""
    return shapes_of(supernet.net.state_dict())


@lru_cache(maxsize=64)
def network_shapes(net: NetSpec) -> tuple[Shapes, frozenset[str]]:
    """(shapes, head keys) of the network ``net`` describes, built on the meta device (no memory)."""
    from models.zoo import meta_parameters

    with meta_parameters():
        supernet = Supernet(net)
    return network_keys(supernet), frozenset(head_keys(supernet))


def check_fits(net: NetSpec, given: Shapes) -> Loaded:
    """Whether weights of these shapes fit the network ``net`` (no tensor is read or built)."""
    _no_switches(net)
    expected, head = network_shapes(net)
    return plan_load(expected, given, set(head))


def _no_switches(net: NetSpec) -> None:
    if net.switches:
        raise WeightsError(
            "S-Net's switchable BN has no counterpart in a plain network's weights; "
            "train in usnet-nonuniform, usnet or mutual mode"
        )


# ---- loading ------------------------------------------------------------------------------------
def load_initial_weights(supernet: Supernet, state: Mapping[str, torch.Tensor]) -> Loaded:
    """Copy ``state`` into the supernet's full-width tensors (a replaced head keeps its initialisation)."""
    _no_switches(supernet.spec)
    loaded = plan_load(network_keys(supernet), shapes_of(state), head_keys(supernet))
    target = supernet.net.state_dict()
    with torch.no_grad():
        for key, tensor in state.items():
            if key not in loaded.replaced:
                target[key].copy_(tensor)
    return loaded


def start_from_weights(supernet: Supernet, spec: SearchSpec, data: DataSplits, report: ReportFn | None) -> Loaded:
    """Load ``spec.weights`` into ``supernet`` and report it, with the full network's held-out accuracy
    before any supernet training (the uploaded model's own accuracy, unless its head was replaced)."""
    loaded = load_initial_weights(supernet, read_state_dict(Path(spec.weights)))
    supernet.set_full()
    score = evaluate(supernet, as_batches(data.val, spec.search.score_size, spec.search.calib_batch_size, spec.seed))
    if report is not None:
        digest = file_sha256(spec.weights)
        report(
            {
                "phase": "train",
                "percent": 0.0,
                "event": {
                    "kind": "weights",
                    "message": f"started from weights {digest[:12]}: full network at "
                    f"{score.accuracy:.2f}% held-out accuracy before supernet training",
                    "data": {
                        "sha256": digest,
                        "val_accuracy": score.accuracy,
                        "val_loss": score.loss,
                        "replaced": loaded.replaced,
                    },
                },
            }
        )
        if loaded.replaced:
            report(
                {
                    "phase": "train",
                    "percent": 0.0,
                    "event": {
                        "kind": "head-replaced",
                        "level": "warning",
                        "message": loaded.head_message(),
                        "data": {
                            "keys": loaded.replaced,
                            "weights_classes": loaded.weights_classes,
                            "network_classes": loaded.network_classes,
                        },
                    },
                }
            )
    return loaded
