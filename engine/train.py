"""Supernet training: S-Net, US-Net, nonuniform US-Net and MutualNet, checkpointed and resumable.

One optimizer step trains several sub-networks of the same weights (`engine.sampling` says which):
each member runs forward and backward in turn, gradients accumulate, then SGD steps once.  With
inplace distillation the first member, the full network, learns from the labels and every other
member from the full network's detached soft predictions in the same step (US-Net).  The flag
applies to S-Net too: the Slimmable Networks paper trained every switch on the labels, which is
``inplace_distill=False``; the authors' later code distils switches the same way, hence one rule.

Runs are reproducible from ``seed``: the data order and every augmentation are functions of
(seed, epoch, position) (see `engine.data.images`), the sampled widths come from their own generator,
and all generator states are in each checkpoint, so resuming gives the weights an uninterrupted
run would have reached.

Data-parallel over several ranks (`engine.distributed`): every rank samples the same widths (one
seed), reads its own shard of each global batch (``spec.batch_size`` stays the global batch),
normalises with the whole batch's BN statistics and sums the gradients once per sandwich step, so
the result is the one-process result up to floating point.  Rank 0 alone writes checkpoints and
reports; a checkpoint holds nothing rank-specific, so a run resumes on any number of ranks.
Dropout is the one exception to "same as one process": each rank draws its own masks.
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from engine.checkpoint import CheckpointError, load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from engine.data import DataSplits
from engine.data.images import ImageTensors
from engine.device import autocast, batch_to, configure_threads, loader_workers, pick_device, to_device
from engine.distributed import Ranks, current
from engine.optim import make_optimizer, make_schedule
from engine.progress import Meter
from engine.sampling import Member, WidthSampler, check_mode, snet_switches
from engine.spec import TEACHERS, TRAIN_MODES, CancelFn, Cancelled, ReportFn, TrainSpec
from models import NetSpec, Supernet, build_supernet
from models.ops import at_least_float32, synchronised_batch_norm

__all__ = ["TrainingDiverged", "build_for_mode", "load_supernet", "pick_device", "sandwich_step", "train_supernet"]

REPORT_EVERY_S = 1.0


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite (usually a learning rate too high for the batch size)."""


def build_for_mode(
    arch: str,
    mode: str,
    num_classes: int,
    input_size: int = 32,
    width_mult: float = 1.0,
    width_min: float = 0.25,
    divisor: int = 8,
    seed: int = 0,
) -> Supernet:
    """A freshly initialised supernet for ``mode``: switchable BN for S-Net, shared BN otherwise.

    Initialisation is seeded (without touching the global generator), so the same arguments give
    the same starting weights.
    """
    if mode not in TRAIN_MODES:
        raise ValueError(f"unknown training mode {mode!r}; choose from {', '.join(TRAIN_MODES)}")
    switches = snet_switches(width_min) if mode == "snet" else ()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        supernet = build_supernet(arch, num_classes, input_size, width_mult, divisor, width_min, switches)
        init_weights(supernet)
    return supernet


def init_weights(model: nn.Module) -> None:
    """The initialisation torchvision's MobileNet and ResNet use (He normal, fan-out, for convs).

    PyTorch's layer default shrinks activations layer after layer, which BN hides in training but
    leaves a deep network's eval-mode output nearly constant before its statistics are calibrated.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
        else:
            continue
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def load_supernet(path: Path, device: torch.device | str = "cpu") -> Supernet:
    """The supernet a checkpoint holds, rebuilt from its stored NetSpec, in eval mode."""
    state = load_checkpoint(Path(path), "cpu")
    supernet = Supernet(NetSpec.from_dict(state["net"]))
    supernet.load_state_dict(state["model"])
    return to_device(supernet, pick_device(str(device))).eval()


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a distribution (inplace distillation's loss; KL up to a constant)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def sandwich_step(
    supernet: Supernet,
    members: list[Member],
    x: torch.Tensor,
    y: torch.Tensor,
    spec: TrainSpec,
    device: torch.device,
    share: float = 1.0,
    teacher: nn.Module | None = None,
) -> float:
    """Forward and backward every member, accumulating gradients; returns the full network's loss.

    ``share`` is this rank's part of the global batch (``len(y) / global batch``): each loss is
    scaled by it before backward, so gradients summed over the ranks are the whole batch's.  The
    returned loss is unscaled (this rank's mean).

    The teacher's soft targets are detached: the students' losses send no gradient through the
    teacher's output (the shared weights still receive the students' gradients through the
    students' own forward passes, which is the point).  With a ``teacher`` network (frozen, see
    `TrainSpec.teacher`) the students learn from its predictions instead; the first member still
    learns from the labels.
    """
    targets = None
    full_loss = float("nan")
    if teacher is not None and spec.inplace_distill:
        with torch.no_grad(), autocast(device):
            teacher_targets = at_least_float32(teacher(x)).softmax(dim=1)
    for member in members:
        supernet.set_widths(member.widths)
        inputs = x
        if member.resolution is not None:
            size = (member.resolution, member.resolution)
            inputs = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        with autocast(device):
            logits = at_least_float32(supernet(inputs))
        if targets is None or not spec.inplace_distill:
            loss = F.cross_entropy(logits, y, label_smoothing=spec.label_smoothing)
        else:
            loss = soft_cross_entropy(logits, targets)
        if targets is None:
            targets = logits.detach().softmax(dim=1) if teacher is None or not spec.inplace_distill else teacher_targets
            full_loss = loss.item()
        (loss * share if share != 1.0 else loss).backward()
    return full_loss


def frozen_copy(supernet: Supernet) -> Supernet:
    """The full width of ``supernet`` as it is now, as a fixed teacher: eval mode (its BN statistics),
    no gradients.  Taken before a resumed run loads its checkpoint, so it is always the network
    training started from."""
    teacher = copy.deepcopy(supernet)  # shares the channel space (`ChannelSpace.__deepcopy__`)
    teacher.set_full()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher.eval()


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Full batches only (a batch of one breaks BN); a set smaller than a batch is one batch."""
    return max(1, num_images // batch_size)


def epoch_batches(num_images: int, batch_size: int, seed: int, epoch: int) -> list[list[tuple[int, int]]]:
    """The epoch's batches as (index, augmentation seed) keys: a pure function of (seed, epoch)."""
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]) & (2**63 - 1)
    generator = torch.Generator().manual_seed(mixed)
    order = torch.randperm(num_images, generator=generator).tolist()
    item_seeds = torch.randint(2**62, (num_images,), generator=generator).tolist()
    size = min(batch_size, num_images)
    return [
        [(order[i], item_seeds[i]) for i in range(s * size, (s + 1) * size)]
        for s in range(steps_per_epoch(num_images, batch_size))
    ]


def train_supernet(
    supernet: Supernet,
    data: DataSplits,
    spec: TrainSpec,
    out_dir: Path,
    *,
    seed: int = 0,
    device: str = "auto",
    report: ReportFn | None = None,
    should_cancel: CancelFn | None = None,
    checkpoint_every_s: float = 300.0,
    ranks: Ranks | None = None,
) -> Path:
    """Train ``supernet`` in place on ``data.train``; returns ``out_dir/final.pt``.

    Continues from ``out_dir/last.pt`` when it exists (it must come from the same network, training
    spec, seed and dataset).  A checkpoint is written every epoch and every ``checkpoint_every_s``
    seconds; when ``should_cancel()`` turns true a checkpoint is written and `Cancelled` raised.
    Reports carry ``percent`` of this training run (callers map it onto their whole job).

    ``ranks`` (default: the process group this process joined, if any) trains data-parallel; every
    rank calls this with the same arguments, only rank 0's ``report`` is called, and a cancel seen
    by any rank's ``should_cancel`` stops all of them.
    """
    ranks = ranks or current()
    return _Trainer(supernet, data, spec, Path(out_dir), seed, ranks.device(device), ranks).fit(
        report if ranks.is_main else None, should_cancel, checkpoint_every_s
    )


class _Trainer:
    def __init__(
        self,
        supernet: Supernet,
        data: DataSplits,
        spec: TrainSpec,
        out_dir: Path,
        seed: int,
        device: torch.device,
        ranks: Ranks,
    ) -> None:
        check_mode(spec.mode, supernet)
        if spec.teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {spec.teacher!r}; choose from {', '.join(TEACHERS)}")
        if seed < 0 or spec.epochs < 1 or spec.batch_size < 1:
            raise ValueError(
                f"seed must be >= 0 and epochs, batch size >= 1 (got {seed}, {spec.epochs}, {spec.batch_size})"
            )
        if spec.width_min != supernet.spec.width_min:
            raise ValueError(
                f"training spec width_min {spec.width_min} differs from the supernet's {supernet.spec.width_min}"
            )
        if len(data.train) < 2:
            raise ValueError(f"{data.name}: the training split has {len(data.train)} images; need at least 2")
        self.global_batch = min(spec.batch_size, len(data.train))
        if self.global_batch < ranks.world:
            raise ValueError(f"batch size {self.global_batch} is smaller than the {ranks.world} ranks it is split over")
        seed = ranks.broadcast_seed(seed)
        self.supernet, self.data, self.spec, self.seed, self.device, self.ranks = (
            supernet,
            data,
            spec,
            seed,
            device,
            ranks,
        )
        self.last, self.final = out_dir / "last.pt", out_dir / "final.pt"
        self.workers = loader_workers(isinstance(data.train, ImageTensors))
        self.steps_per_epoch = steps_per_epoch(len(data.train), spec.batch_size)
        self.total_steps = spec.epochs * self.steps_per_epoch
        # The layout is the device's (`engine.device`): channels-last on CUDA, NCHW on the CPU.  There
        # channels-last makes a sandwich step of MobileNetV2 at 32 px 1.3x faster
        # (bench/bench_training.py --channels-last) but rounds differently, and a 5-epoch digits
        # supernet of tests/engine/test_user_network.py then ends below its 80% bound (79.7%).
        to_device(supernet, device)
        self.teacher = frozen_copy(supernet) if spec.teacher == "original" else None
        self.sampler = WidthSampler(supernet, spec.mode, spec.num_sandwich, spec.resolutions or None, seed)
        self.optimizer = make_optimizer(supernet, spec)
        self.schedule = make_schedule(self.optimizer, spec, self.steps_per_epoch)
        self.identity = {"net": supernet.spec.to_dict(), "train": asdict(spec), "seed": seed, "data": data.name}
        self.epoch = self.step = 0
        self.elapsed_s = 0.0

    # ---- run ---------------------------------------------------------------------------------
    def fit(self, report: ReportFn | None, should_cancel: CancelFn | None, checkpoint_every_s: float) -> Path:
        configure_threads(self.workers)
        cuda = (
            [torch.cuda.current_device() if self.device.index is None else self.device.index]
            if self.device.type == "cuda"
            else []
        )
        try:
            with (
                torch.random.fork_rng(devices=cuda),
                synchronised_batch_norm() if self.ranks.distributed else nullcontext(),
            ):
                torch.manual_seed(self.seed)
                finished = self._resume()
                self._seed_dropout()
                if not finished:
                    self._loop(report, should_cancel, checkpoint_every_s)
        finally:
            self.supernet.set_full()  # whatever width the last step sampled, callers get the full network
        if not self.final.exists():
            self._save(self.final, finished=True)
        self.ranks.barrier()  # no rank returns (and loads final.pt) before rank 0 has written it
        return self.final

    def _seed_dropout(self) -> None:
        """Ranks other than 0 draw their own dropout masks (the same ones on every resume)."""
        if self.ranks.rank:
            torch.manual_seed(int(np.random.SeedSequence([self.seed, self.step, self.ranks.rank]).generate_state(1)[0]))

    def _loop(self, report: ReportFn | None, should_cancel: CancelFn | None, checkpoint_every_s: float) -> None:
        self.supernet.train()
        meter = Meter(self.total_steps, self.step)
        started = last_save = last_report = time.monotonic()
        while self.epoch < self.spec.epochs:
            for x, y in self._loader():
                meter.update(len(y), self._step(x, y))
                now = time.monotonic()
                end_of_epoch = self.step % self.steps_per_epoch == 0
                if report is not None and (end_of_epoch or now - last_report >= REPORT_EVERY_S):
                    report(self._event(meter))
                    last_report = now
                stop = self.ranks.any(should_cancel is not None and should_cancel())
                if stop or now - last_save >= checkpoint_every_s:
                    self._checkpoint(started)
                    started = last_save = time.monotonic()
                if stop:
                    raise Cancelled(f"training cancelled at step {self.step}; {self.last} holds the progress")
            self.epoch += 1
            self._checkpoint(started)
            started = last_save = time.monotonic()
        self._save(self.final, finished=True)
        self._save(self.last, finished=True)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        x, y = batch_to(x, self.device), y.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        share = len(y) / self.global_batch
        loss = sandwich_step(self.supernet, self.sampler.members(), x, y, self.spec, self.device, share, self.teacher)
        if self.ranks.distributed:  # the whole batch's gradient and mean loss, the same on every rank
            (loss,) = self.ranks.sum_gradients(self.supernet.parameters(), [loss * share])
        if not np.isfinite(loss):
            raise TrainingDiverged(f"training diverged at step {self.step} (loss {loss}); lower the learning rate")
        self.optimizer.step()
        self.schedule.step()
        self.step += 1
        return loss

    def _loader(self) -> DataLoader:
        """This epoch's remaining batches (a resumed epoch skips those already trained on); each
        rank reads its own shard of every batch."""
        batches = epoch_batches(len(self.data.train), self.spec.batch_size, self.seed, self.epoch)
        done = self.step - self.epoch * self.steps_per_epoch
        rank, world = self.ranks.rank, self.ranks.world
        batches = [batch[rank::world] for batch in batches]
        # Its own generator: a loader draws a worker seed when iterated, which must not come from (and
        # shift) the global generator that dropout uses, or a resumed run would drift from a straight one.
        return DataLoader(
            self.data.train,
            batch_sampler=batches[done:],
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _event(self, meter: Meter) -> dict[str, Any]:
        """A progress report; ``loss`` is the full network's mean label loss since the last report."""
        return {
            "phase": "train",
            "percent": 100.0 * self.step / self.total_steps,
            "epoch": self.epoch + 1,
            "epochs": self.spec.epochs,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            **meter.snapshot(self.step),
        }

    # ---- checkpoints -------------------------------------------------------------------------
    def _checkpoint(self, since: float) -> None:
        self.elapsed_s += time.monotonic() - since
        self._save(self.last, finished=False)

    def _save(self, path: Path, finished: bool) -> None:
        if not self.ranks.is_main:
            return
        save_checkpoint(
            {
                **self.identity,
                "model": self.supernet.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.schedule.state_dict(),
                "rng": rng_states(self.sampler.generator),
                "epoch": self.epoch,
                "step": self.step,
                "finished": finished,
                "elapsed_s": self.elapsed_s,
            },
            path,
        )

    def _resume(self) -> bool:
        """Load ``last.pt`` if there is one; returns whether that run had already finished."""
        if not self.last.exists():
            return False
        state = load_checkpoint(self.last, self.device)
        for key, expected in self.identity.items():
            if state.get(key) != expected:
                raise CheckpointError(
                    f"{self.last} belongs to a different run ({key}: {_difference(state.get(key), expected)}); "
                    "use another output folder"
                )
        self.supernet.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        restore_rng_states(state["rng"], self.sampler.generator)
        self.epoch, self.step, self.elapsed_s = state["epoch"], state["step"], state["elapsed_s"]
        return bool(state["finished"])


def _difference(stored: Any, current: Any) -> str:
    if isinstance(stored, dict) and isinstance(current, dict):
        keys = sorted(k for k in {*stored, *current} if stored.get(k) != current.get(k))
        return ", ".join(f"{k} was {stored.get(k)!r}, now {current.get(k)!r}" for k in keys)
    return f"was {stored!r}, now {current!r}"
