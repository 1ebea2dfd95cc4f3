"""Write one search answer to disk: the channel-config JSON and the slim model files.

The slim model comes from the supernet at the chosen widths with BN calibrated for exactly that
configuration (its logits equal the calibrated supernet's), unless a retrained model is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from engine.calibrate import calibrate_bn
from engine.data.batches import Batches
from engine.spec import MODEL_FORMATS
from models import ChannelConfig, Supernet, export_slim
from models.files import save_model


def calibrated_slim(supernet: Supernet, widths: dict[str, int], calib: Batches) -> nn.Module:
    """The plain slim model of ``widths`` with BN statistics estimated for that configuration."""
    supernet.set_widths(widths)
    calibrate_bn(supernet, calib)
    return export_slim(supernet, widths)


def export_answer(
    supernet: Supernet,
    widths: dict[str, int],
    folder: Path,
    workdir: Path,
    formats: list[str],
    model: nn.Module,
    accuracy: float | None,
    **extra: Any,
) -> dict[str, str]:
    """Save ``folder/config.json`` and ``folder/model.<fmt>``; returns paths relative to ``workdir``.

    The config's ``accuracy`` is the best measured one (test after retraining, else validation);
    ``extra`` (budget, validation and test figures, ...) is stored beside it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config = ChannelConfig.from_widths(supernet, widths, accuracy=accuracy, **extra)
    files = {"config": config.save(folder / "config.json")}
    for fmt in formats:
        files[fmt] = save_model(model, folder / f"model{MODEL_FORMATS[fmt]}", supernet.spec.input_size)
    return {kind: str(Path(path).relative_to(workdir)) for kind, path in files.items()}
