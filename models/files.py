"""Slim models on disk: PyTorch state (.pt), TorchScript (.ts) and ONNX (.onnx), chosen by extension."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from models.config import ChannelConfig
from models.export import export_slim
from models.supernet import Supernet

FORMATS = {".pt": "pt", ".pth": "pt", ".ts": "torchscript", ".onnx": "onnx"}


def slim_from_config(config: ChannelConfig, checkpoint: Path | None = None) -> nn.Module:
    """The slim model of ``config``: supernet weights from ``checkpoint``, or fresh ones.

    With a checkpoint, BN statistics are whatever the checkpoint holds for shared BN; callers that
    need calibrated statistics (the search does) calibrate the supernet before exporting.
    """
    supernet = Supernet(config.net)
    if checkpoint is not None:
        _load_weights(supernet, checkpoint)
    return export_slim(supernet, config.widths(supernet))


def _load_weights(supernet: Supernet, checkpoint: Path) -> None:
    """Supernet weights from a checkpoint (a plain dict with ``model``, or a bare state dict).

    A file that is no checkpoint, or one of another network, is a user error: ``ValueError`` with
    one line, so the command line never shows a traceback for it.
    """
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        supernet.load_state_dict(state["model"] if "model" in state else state)
    except FileNotFoundError:
        raise
    except (OSError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint {checkpoint} cannot be loaded into this config's network: {first_line}") from None


def save_model(model: nn.Module, path: Path, input_size: int) -> Path:
    """Write ``model`` in the format the file extension names.

    ``.pt`` holds the whole module (``torch.load(path, weights_only=False)`` gives it back, ready to
    run, no autoslim needed); ``.ts`` is TorchScript; ``.onnx`` has a dynamic batch axis.
    """
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"unknown model format {path.suffix!r} for {path}; use one of {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.zeros(1, 3, input_size, input_size)
    if kind == "pt":
        torch.save(model, path)
    elif kind == "torchscript":
        torch.jit.trace(model, example).save(str(path))
    else:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    return path
