"""Where training runs: the device, mixed precision, memory layout and CPU threads.

One code path for GPU and CPU: on CUDA the forward runs under bf16 autocast with channels_last
tensors (tensor-core friendly, no loss scaling needed); on the CPU it runs in float32, because CPU
bf16 is slower than float32 on most machines and changes the numbers tests compare.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes the GPU when there is one; an explicit name must be usable here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA GPU is available")
    return device


def autocast(device: torch.device) -> AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def batch_to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return x.to(device)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def loader_workers(in_memory: bool) -> int:
    """Decoding files needs worker processes; in-memory tensors do not (workers only add copies)."""
    return 0 if in_memory else min(8, max(0, available_cores() - 1))


def compute_threads(workers: int = 0) -> int:
    """The CPU threads torch computes with: ``OMP_NUM_THREADS`` when set (the way to share a machine
    with other jobs), else the cores ``workers`` loader processes leave.

    A function of the machine and its settings, never of what the process ran before: a latency
    table is keyed by its thread count, so reading it from torch's current state would make the
    same search measure a second table after training changed that state.
    """
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return max(1, available_cores() - workers)


def configure_threads(workers: int) -> None:
    """Give torch the cores the loader workers leave, so the two do not fight over a small machine."""
    torch.set_num_threads(compute_threads(workers))
