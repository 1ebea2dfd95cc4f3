"""SGD with nesterov momentum and a per-step cosine schedule with linear warm-up.

Weight decay applies to conv and linear weights only: decaying BN scales/shifts and biases only
shrinks them toward a worse optimum (the usual practice in the slimmable papers' code).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.spec import TrainSpec


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.SGD:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.momentum > 0)


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up from lr/warmup to lr, then cosine decay to 0 at the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))


def make_schedule(
    optimizer: torch.optim.Optimizer, spec: TrainSpec, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = spec.epochs * steps_per_epoch
    warmup = min(total, round(spec.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup))
