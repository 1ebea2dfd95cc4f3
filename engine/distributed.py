"""One search over several processes (ranks): the rank context and the few collectives it needs.

Every caller holds a `Ranks`; outside a distributed run it is the single process (rank 0 of 1) and
every collective is a no-op, so training, the greedy search and the job share one code path.
Ranks join the process group torchrun (or `launch`, the same elastic launcher) describes in the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...): gloo on CPUs, NCCL for
GPU tensors (with gloo beside it for the small CPU-side exchanges: cancel flags, gathered scores).

What crosses ranks, and why it is enough for a one-process result:
- gradients, summed once per sandwich step (each rank weights its loss by its share of the global
  batch, so the sum is the gradient of the whole batch's mean loss), in flat buckets;
- BN batch statistics in training (`models.ops.synchronised_batch_norm`), so a rank's shard is
  normalised with the whole batch's statistics, as one process would;
- a step's greedy scores, gathered (`shard_scorer`), so every rank makes the same choice;
- the cancel flag, so a cancel seen by one rank stops all of them at the same step.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from engine.device import pick_device

TIMEOUT_ENV = "AUTOSLIM_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 3600.0
"""How long a collective may wait.  A dead rank is noticed by the elastic agent, which stops the
others at once; the timeout only bounds waits such as rank 0 holding the supernet-cache lock while
another job trains the same supernet."""
BUCKET_ELEMENTS = 1 << 24
"""Gradient elements per all-reduce: few calls for small nets, bounded extra memory for large ones."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``world`` (``local_rank`` picks its GPU)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 reports progress and writes checkpoints, search state and results."""
        return self.rank == 0

    def device(self, name: str = "auto") -> torch.device:
        """``name`` (`engine.device.pick_device`), with a bare ``cuda`` meaning this rank's own GPU."""
        device = pick_device(name)
        if device.type == "cuda" and device.index is None and self.distributed:
            device = torch.device("cuda", self.local_rank)
        return device

    # ---- collectives (no-ops for one process) ---------------------------------------------------
    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_seed(self, seed: int) -> int:
        """Rank 0's seed: the widths each step samples must be the same on every rank."""
        return int(self.broadcast(int(seed)))

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a cancel seen by any rank stops them all)."""
        if not self.distributed:
            return bool(flag)
        box = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(box, op=dist.ReduceOp.MAX)
        return bool(box.item())

    def agreed(self, check: Callable[[], bool]) -> Callable[[], bool]:
        """``check`` made collective: every rank must call the result at the same points."""
        return check if not self.distributed else (lambda: self.any(check()))

    def sum_gradients(self, params: Iterable[torch.nn.Parameter], extras: Sequence[float] = ()) -> list[float]:
        """Sum every parameter's gradient over the ranks, in flat buckets; ``extras`` ride along.

        A parameter without a gradient counts as zero (every rank trains the same widths, so it is
        the same parameters on every rank, but the sum must not depend on that).
        """
        if not self.distributed:
            return list(extras)
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        extra = torch.tensor(list(extras), dtype=torch.float32, device=grads[0].device if grads else "cpu")
        for bucket in _buckets([*grads, extra]):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            for g, part in zip(bucket, flat.split([g.numel() for g in bucket])):
                g.copy_(part.view_as(g))
        return extra.tolist()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (downloads, measurements that fill a cache), then the others."""
        if not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.is_main:
                self.barrier()


def _buckets(tensors: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Consecutive runs of tensors of one dtype and device, each up to `BUCKET_ELEMENTS`."""
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        if bucket and (
            t.dtype != bucket[0].dtype or t.device != bucket[0].device or size + t.numel() > BUCKET_ELEMENTS
        ):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel()
    if bucket:
        yield bucket


def current() -> Ranks:
    """The rank context of this process: the joined process group, or the single process."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Ranks()


def init_from_env(device: str = "auto") -> Ranks:
    """Join the process group the launcher describes (``WORLD_SIZE`` > 1), else the single process.

    GPUs take NCCL for their tensors and gloo for CPU ones; CPUs take gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return current()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = pick_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local)
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timeout)
    return current()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def under_launcher() -> bool:
    """Whether this process is one rank of a torchrun / elastic run (it must not launch others)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch(
    nproc: int,
    entrypoint: Callable[..., Any] | str,
    args: Sequence[Any] = (),
    *,
    devices: Sequence[str] = (),
    max_restarts: int = 0,
    start_method: str = "spawn",
) -> dict[int, Any]:
    """Start ``nproc`` local ranks with torch's elastic launcher (what ``torchrun --standalone`` runs).

    ``entrypoint`` is a module-level function (its return values come back by rank) or a program
    (``sys.executable`` with ``args``).  ``devices`` pins the ranks to those GPUs
    (``CUDA_VISIBLE_DEVICES``); ``"cpu"`` ones hide every GPU, so the ranks run on the CPU with gloo.
    Each rank computes with the threads one process would (`engine.device.compute_threads`): a sum
    split over another number of threads rounds differently, and the greedy's scores must be the
    one-process ones to the last bit (``OMP_NUM_THREADS`` shares the cores out instead, as torchrun
    does with one thread each).  When any rank fails, the agent stops the others and this raises
    `torch.distributed.elastic.multiprocessing.errors.ChildFailedError` naming the failed ranks.
    ``start_method`` ``fork`` saves each rank importing torch again (seconds), and is safe only in a
    process that has not touched CUDA nor run OpenMP work; ``spawn`` always is.
    """
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    env = {"CUDA_VISIBLE_DEVICES": ",".join(d for d in devices if d != "cpu")} if devices else {}
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=max_restarts,
        monitor_interval=0.1,
        start_method=start_method,
    )
    with _environment(env):
        return elastic_launch(config, entrypoint)(*args)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """The ranks inherit the launcher's environment: set ``values`` for them, then restore."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def rank_command(module: str, argv: Sequence[str]) -> tuple[str, list[str]]:
    """The program and arguments that run ``python -m module argv`` as one rank."""
    return sys.executable, ["-m", module, *argv]


class ShardedScorer:
    """A greedy step's candidates spread over the ranks: each scores its share (round robin, in the
    step's order), the scores are gathered, and every rank gets them all, so every rank picks the
    same candidate and the trajectory is the one-process one.  Wraps any scorer with the
    ``score(parent, candidates) -> {group: Score}`` interface."""

    def __init__(self, inner: Any, ranks: Ranks) -> None:
        self.inner, self.ranks = inner, ranks

    def score(self, parent: dict[str, int], candidates: dict[str, dict[str, int]]) -> dict[str, Any]:
        names = list(candidates)
        mine = {g: candidates[g] for g in names[self.ranks.rank :: self.ranks.world]}
        merged: dict[str, Any] = {}
        for part in self.ranks.gather(self.inner.score(parent, mine) if mine else {}):
            merged.update(part)
        return {g: merged[g] for g in names}


def shard_scorer(scorer: Any, ranks: Ranks | None) -> Any:
    """``scorer`` spread over ``ranks`` (unchanged for one process)."""
    return ShardedScorer(scorer, ranks) if ranks is not None and ranks.distributed else scorer
