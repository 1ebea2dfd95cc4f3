"""Retraining a chosen channel configuration: fine-tuned from the supernet, or from scratch.

AutoSlim retrains its configurations from scratch; inheriting the supernet's weights (the slim
model exported with calibrated BN) and fine-tuning is the cheap alternative, and the default here.
Both use the supernet's training recipe (`engine.optim`: SGD with nesterov momentum, warm-up then
cosine decay, no weight decay on BN and biases; label smoothing and batch size from the
`TrainSpec`), with the number of epochs and the peak learning rate of the retraining.  A plain
model trains like any torchvision model: one forward and backward per batch, labels only.
Fine-tuning skips the warm-up: the weights are already trained, warm-up only wastes the short
schedule.  With a ``teacher`` (the user's original network) the loss is the mean of the label loss
and the cross-entropy against the teacher's predictions (knowledge distillation, Hinton et al.
2015, at temperature 1): the slim network learns what the full one knows about every image, not
only its label.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from engine.calibrate import Score, calibrate_bn, evaluate
from engine.data import DataSplits, as_batches
from engine.data.batches import Batches
from engine.device import autocast, batch_to, pick_device, to_device
from engine.optim import make_optimizer, make_schedule
from engine.spec import CancelFn, Cancelled, ReportFn, TrainSpec
from engine.train import epoch_batches, soft_cross_entropy, steps_per_epoch
from models import ChannelConfig, Supernet, build, export_slim

EVAL_BATCH = 200
DISTILL_WEIGHT = 0.5
"""Share of the teacher's term in a distilled fine-tuning loss (the rest is the label loss)."""


@dataclass
class Retrained:
    model: nn.Module  # plain slim model, eval mode, on the CPU
    test: Score
    seconds: float

    def record(self, epochs: int, from_scratch: bool) -> dict[str, Any]:
        """What ``retrain.json`` beside the model holds (a search's work folder and `autoslim retrain` alike)."""
        return {
            "test_accuracy": self.test.accuracy,
            "test_loss": self.test.loss,
            "epochs": epochs,
            "from_scratch": from_scratch,
            "seconds": round(self.seconds, 2),
        }


def initial_model(config: ChannelConfig, supernet: Supernet | None, calib: Batches | None, seed: int = 0) -> nn.Module:
    """The starting point: the supernet's slim model with BN calibrated on ``calib``, or fresh weights.

    Fresh weights are seeded without touching the global generator.
    """
    if supernet is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build(config.arch, channels=config)
    widths = config.widths(supernet)
    supernet.set_widths(widths)
    if calib is not None:
        calibrate_bn(supernet, calib)
    return export_slim(supernet, widths)


def distillation_loss(logits: torch.Tensor, teacher: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Cross-entropy of ``logits`` against the teacher's predictions on the same batch (no gradient to the teacher)."""
    with torch.no_grad(), autocast(device):
        targets = teacher(x).float().softmax(dim=1)
    return soft_cross_entropy(logits, targets)


def retrain(
    model: nn.Module,
    data: DataSplits,
    recipe: TrainSpec,
    epochs: int,
    lr: float,
    *,
    fine_tune: bool = True,
    seed: int = 0,
    device: str = "auto",
    report: ReportFn | None = None,
    should_cancel: CancelFn | None = None,
    teacher: nn.Module | None = None,
) -> Retrained:
    """Train ``model`` (in place) on ``data.train`` and score it on ``data.test``.

    Batches are the same pure function of (seed, epoch) as the supernet trainer's, so two runs with
    one seed see the same images in the same order.  ``should_cancel`` is checked every batch;
    ``report`` gets one event per epoch (``percent`` of this retraining).  ``teacher`` (left
    unchanged, run in eval mode) turns on distillation.
    """
    if epochs < 1:
        raise ValueError(f"retraining needs at least one epoch, got {epochs}")
    started, target = time.monotonic(), pick_device(device)
    spec = replace(recipe, epochs=epochs, lr=lr, warmup_epochs=0.0 if fine_tune else recipe.warmup_epochs)
    model = to_device(model, target)
    teacher = None if teacher is None else to_device(teacher, target).eval()
    per_epoch = steps_per_epoch(len(data.train), spec.batch_size)
    optimizer = make_optimizer(model, spec)
    schedule = make_schedule(optimizer, spec, per_epoch)
    with torch.random.fork_rng(devices=[target.index or 0] if target.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout
        model.train()
        for epoch in range(epochs):
            loader = DataLoader(data.train, batch_sampler=epoch_batches(len(data.train), spec.batch_size, seed, epoch))
            for x, y in loader:
                if should_cancel is not None and should_cancel():
                    raise Cancelled(f"retraining cancelled in epoch {epoch + 1}")
                x, y = batch_to(x, target), y.to(target)
                optimizer.zero_grad(set_to_none=True)
                with autocast(target):
                    logits = model(x).float()
                loss = F.cross_entropy(logits, y, label_smoothing=spec.label_smoothing)
                if teacher is not None:
                    loss = (1 - DISTILL_WEIGHT) * loss + DISTILL_WEIGHT * distillation_loss(logits, teacher, x, target)
                loss.backward()
                optimizer.step()
                schedule.step()
            if report is not None:
                report(
                    {
                        "phase": "retrain",
                        "percent": 100.0 * (epoch + 1) / epochs,
                        "epoch": epoch + 1,
                        "epochs": epochs,
                        "step": (epoch + 1) * per_epoch,
                        "loss": loss.item(),
                        "lr": optimizer.param_groups[0]["lr"],
                    }
                )
    model.eval()
    test = evaluate(model, as_batches(data.test, batch_size=EVAL_BATCH, device=target))
    return Retrained(model.cpu().eval(), test, time.monotonic() - started)
