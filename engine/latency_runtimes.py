"""Where latency is timed: torch itself, or ONNX Runtime (any execution provider).

A latency table (`engine.latency`) is the same object whichever runtime timed it; only the timing
differs.  A runtime times two things: a few graph nodes as a tiny module (`time_op`, the table's
cells) and a whole slim model (`time_model`, the fit of scale and overhead and the check of a
prediction).  Both use one protocol (`timed_ms`): the fastest of a few blocks of back-to-back
calls, after a warm-up, on the calling thread's CPU time when one CPU thread does the work
(`clock_for`), else on the wall clock.

ONNX Runtime times what a deployment runs: the op or model exported to ONNX as autoslim exports
slim models (`models.files.save_model`), in an `InferenceSession` with all graph optimisations on
and the thread count pinned (``intra_op_num_threads``, one inter-op thread), fed from numpy.  It is
imported only when used, so the profiler on a device needs torch, onnx, onnxruntime and numpy and
nothing of the service.
"""

from __future__ import annotations

import io
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from engine.allocator import steady_allocator
from engine.device import compute_threads

RUNTIMES = ("torch", "onnxruntime")


@dataclass
class Timing:
    """How each op is timed: the fastest of ``blocks`` blocks, each at least ``block_s`` long.

    The minimum, not the mean: on a shared machine other processes only ever add time, so the
    fastest block is the best estimate of the op's own cost (the `timeit` convention).
    """

    blocks: int = 5
    block_s: float = 0.002
    warmup: int = 2


def end_to_end_timing(per_op: Timing) -> Timing:
    """Whole-model timing to match a per-op timing: more and longer blocks (a whole forward is long
    enough to be interrupted often on a busy machine; the fastest block is kept)."""
    return Timing(blocks=3 * per_op.blocks, block_s=25 * per_op.block_s, warmup=per_op.warmup)


def timed_ms(
    run: Callable[[], object],
    timing: Timing,
    sync: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Milliseconds per call of ``run``: the fastest of ``timing.blocks`` equal blocks of calls."""
    for _ in range(timing.warmup):
        run()
    sync()
    start, calls = clock(), 0
    while clock() - start < timing.block_s or calls == 0:  # size one block
        run()
        calls += 1
    sync()
    per_block = []
    for _ in range(timing.blocks):
        start = clock()
        for _ in range(calls):
            run()
        sync()
        per_block.append((clock() - start) / calls)
    return 1000.0 * min(per_block)


def clock_for(threads: int, cpu: bool = True) -> Callable[[], float]:
    """The clock to time a run on: the calling thread's CPU time when it is the only thread at work.

    A single-threaded CPU run does all its work on the calling thread, so that thread's CPU time is
    its latency on a machine of its own; other processes on a shared machine do not add to it, as
    they do to wall time (on 2 busy cores, wall-clock timings of the same model differed up to 2x
    between runs).  Several threads, or a GPU, are timed on the wall clock.
    """
    return time.thread_time if cpu and threads == 1 else time.perf_counter


class Runtime(Protocol):
    """What a latency table needs from the runtime it describes."""

    fuses: bool
    """Whether a conv runs with the BN, activation and residual addition after it in one kernel, so
    the table times them as one unit (`engine.latency.units`)."""

    def describe(self) -> dict[str, Any]:
        """``runtime``, ``version``, ``provider``, ``device``, ``threads``: recorded in the table."""

    def time_op(self, module: nn.Module, inputs: tuple[Any, ...], timing: Timing) -> float:
        """Milliseconds of one call of ``module(*inputs)`` (an input may be a tuple of tensors)."""

    def time_model(self, model: nn.Module, input_size: int, batch_size: int, timing: Timing) -> float:
        """Milliseconds of one forward pass of a whole (slim) model on random images."""


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Run torch with ``threads`` CPU threads (a table is only valid for the thread count it was timed with)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class TorchRuntime:
    """Eager PyTorch on ``device``, in inference mode, with a steady allocator (`engine.allocator`).

    ``threads`` None takes `engine.device.compute_threads` (and records it).
    """

    fuses = False  # eager mode runs every module on its own

    def __init__(self, device: torch.device | str = "cpu", threads: int | None = None) -> None:
        self.device = torch.device(device)
        self.threads = threads or compute_threads()

    def describe(self) -> dict[str, Any]:
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else cpu_model()
        return {
            "runtime": "torch",
            "version": torch.__version__,
            "provider": str(self.device),
            "device": device,
            "threads": self.threads,
        }

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time_op(self, module: nn.Module, inputs: tuple[Any, ...], timing: Timing) -> float:
        steady_allocator()
        module = module.to(self.device).eval()
        inputs = tuple(_moved(x, self.device) for x in inputs)
        with torch.inference_mode(), cpu_threads(self.threads):
            return timed_ms(
                lambda: module(*inputs), timing, self._sync, clock_for(self.threads, self.device.type == "cpu")
            )

    def time_model(self, model: nn.Module, input_size: int, batch_size: int, timing: Timing) -> float:
        x = torch.randn(batch_size, 3, input_size, input_size)
        return self.time_op(model, (x,), timing)


class OnnxRuntime:
    """ONNX Runtime with one execution provider and a pinned intra-op thread count."""

    fuses = True  # export folds BN into the conv; the graph optimiser fuses activations and additions

    def __init__(self, provider: str = "CPUExecutionProvider", threads: int = 1) -> None:
        import onnxruntime

        if provider not in onnxruntime.get_available_providers():
            raise ValueError(
                f"ONNX Runtime here has no {provider} (available: {', '.join(onnxruntime.get_available_providers())})"
            )
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.ort, self.provider, self.threads = onnxruntime, provider, threads

    def describe(self) -> dict[str, Any]:
        cpu = self.provider == "CPUExecutionProvider" or not torch.cuda.is_available()
        return {
            "runtime": "onnxruntime",
            "version": self.ort.__version__,
            "provider": self.provider,
            "device": cpu_model() if cpu else torch.cuda.get_device_name(0),
            "threads": self.threads,
        }

    def session(self, model: bytes | str) -> Any:
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # no warnings about unused initializers and the like
        return self.ort.InferenceSession(model, options, providers=[self.provider])

    def time_onnx(self, model: bytes | str, inputs: tuple[Any, ...], timing: Timing) -> float:
        """Milliseconds of one ``run`` of an ONNX model (bytes or a file) on numpy ``inputs``."""
        session = self.session(model)
        feed = {i.name: x for i, x in zip(session.get_inputs(), inputs)}
        clock = clock_for(self.threads, self.provider == "CPUExecutionProvider")
        return timed_ms(lambda: session.run(None, feed), timing, clock=clock)

    def time_op(self, module: nn.Module, inputs: tuple[Any, ...], timing: Timing) -> float:
        buffer, leaves = io.BytesIO(), list(_leaves(inputs))  # the exporter flattens tuples of tensors
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module.eval(), inputs, buffer, input_names=[f"x{i}" for i in range(len(leaves))], dynamo=False
            )
        return self.time_onnx(buffer.getvalue(), tuple(x.numpy() for x in leaves), timing)

    def time_model(self, model: nn.Module, input_size: int, batch_size: int, timing: Timing) -> float:
        from models.files import save_model

        x = torch.randn(batch_size, 3, input_size, input_size).numpy()
        with tempfile.TemporaryDirectory(prefix="autoslim-ort-") as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = save_model(model, Path(folder) / "model.onnx", input_size)  # as the service exports it
            return self.time_onnx(str(path), (x,), timing)


def _moved(value: Any, device: torch.device) -> Any:
    return tuple(_moved(v, device) for v in value) if isinstance(value, tuple) else value.to(device)


def _leaves(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, tuple):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def make_runtime(
    name: str, device: str = "cpu", provider: str = "CPUExecutionProvider", threads: int | None = None
) -> Runtime:
    """A runtime by name: ``torch`` on ``device``, or ``onnxruntime`` with ``provider`` (1 thread by default)."""
    if name == "torch":
        return TorchRuntime(device, threads)
    if name == "onnxruntime":
        return OnnxRuntime(provider, threads or 1)
    raise ValueError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
