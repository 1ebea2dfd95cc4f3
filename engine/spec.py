"""The plain-data contract of a search job: what goes into `run_search` and what comes out.

Kept free of torch so the API, the worker and the command line can build, validate and store a
spec without importing the training stack.  Everything here round-trips through JSON
(`to_dict` / `from_dict`) because specs live in the database and results are served as JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

TrainMode = Literal["snet", "usnet", "usnet-nonuniform", "mutual"]
TRAIN_MODES: tuple[str, ...] = ("snet", "usnet", "usnet-nonuniform", "mutual")
MODEL_FORMATS: dict[str, str] = {"pt": ".pt", "onnx": ".onnx", "torchscript": ".ts"}
"""The formats a slim model is exported and downloaded in, with their file extensions."""
LEGACY_FORMATS: dict[str, str] = {"ts": "torchscript"}
"""Format names specs once used (the file extension); read as the format they name."""
TEACHERS: tuple[str, ...] = ("full", "original")
CRITERIA: tuple[str, ...] = ("accuracy", "loss")
PHASES: tuple[str, ...] = ("data", "train", "search", "retrain", "export", "done")
BUDGET_KINDS: tuple[str, ...] = ("macs", "latency_ms", "params")
"""What a budget may limit; each is also the `SearchSpec` field listing such budgets."""


@dataclass
class TrainSpec:
    """How the supernet is trained (AutoSlim: nonuniform US-Net, a fraction of a full schedule)."""

    mode: str = "usnet-nonuniform"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-5
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    num_sandwich: int = 4
    inplace_distill: bool = True
    width_min: float = 0.25
    resolutions: list[int] = field(default_factory=list)  # mutual mode; empty = derived from input size
    teacher: str = "full"
    """Who the narrower widths distil from (with ``inplace_distill``): ``"full"``, the supernet's own
    full width in the same step (US-Net), or ``"original"``, a frozen copy of the network as training
    started: the user's trained network when the supernet starts from weights.  The moving full width
    drifts as the shared weights serve every width; the original stays the network the user trusts."""


PRETRAINED_TRAIN: dict[str, Any] = {"epochs": 3, "lr": 0.01, "warmup_epochs": 0.0, "teacher": "original"}
"""The training defaults of a supernet that starts from trained weights (`SearchSpec.weights`);
fields the user sets still win.  The scratch defaults (10 epochs, peak lr 0.1, one warm-up epoch)
are for random weights.  A trained full network already sits in a good minimum: a tenth of the
learning rate keeps it there while the narrower sub-networks, distilled from it (the teacher is
right from the first step), catch up in a few epochs; warm-up protects random weights from large
early steps, which trained ones do not need.  The narrower widths distil from the frozen trained
network itself (``teacher="original"``): an earlier session measured it ahead of the moving full
width (its code was lost); `bench/bench_peers.py`'s ``autoslim-teacher-full`` row re-measures it."""


def with_pretrained_defaults(train: dict[str, Any]) -> dict[str, Any]:
    """A training spec's fields with `PRETRAINED_TRAIN` filling the ones not given."""
    return {**PRETRAINED_TRAIN, **train}


@dataclass
class SearchSettings:
    """Greedy slimming knobs: bin count per group, held-out sizes used to score and to calibrate BN,
    the two speed-ups of `engine.greedy` (combined moves on by default; ``bins_per_step`` 1 and
    ``race_fraction`` 0 give the exact greedy search), and the memory layout it runs in (channels-last: 1.5-2x faster on
    CPU)."""

    bins: int = 10
    divisor: int = 8
    val_fraction: float = 0.1
    score_size: int = 1000
    calib_size: int = 2000
    calib_batch_size: int = 200
    bins_per_step: int = 4
    race_fraction: float = 0.0  # racing pays only with a large scoring set: off until measured (issue 14)
    race_z: float = 2.0
    channels_last: bool = True
    criterion: str = "accuracy"
    """What ranks a step's candidates first (`engine.racing.ranked`): held-out ``"accuracy"`` (AutoSlim;
    loss breaks ties) or cross-entropy ``"loss"`` (accuracy breaks ties), which sees a candidate's
    confidence on every image, not only the images whose prediction flips."""
    fill: bool = True
    """After the greedy pass, widen each budget's answer one divisor at a time, best candidate first,
    while it still fits its budget (`engine.budget_fill`): a step removes a whole bin, so the first
    step under a budget can stop well below it."""


@dataclass
class RetrainSpec:
    """Optional fine-tuning of every chosen configuration from the supernet's weights."""

    epochs: int = 0
    from_scratch: bool = False
    lr: float = 0.01


@dataclass
class SearchSpec:
    """One search job.  `macs` are multiply-accumulates (the papers' "FLOPs").

    Each budget is an amount or a share of the full network as a string (``"40%"``), resolved when
    the job knows the network (`engine.budgets.budgets_of`).
    """

    arch: str
    dataset: str
    macs: list[int | str] = field(default_factory=list)
    latency_ms: list[float | str] = field(default_factory=list)
    params: list[int | str] = field(default_factory=list)
    input_size: int = 32
    width_mult: float = 1.0
    seed: int = 0
    device: str = "auto"
    train: TrainSpec = field(default_factory=TrainSpec)
    search: SearchSettings = field(default_factory=SearchSettings)
    retrain: RetrainSpec = field(default_factory=RetrainSpec)
    export_formats: list[str] = field(default_factory=lambda: ["pt", "onnx"])  # `MODEL_FORMATS` keys
    latency_table: str = ""
    """A latency table (`autoslim profile`) whose device the latency budgets are for: its file for
    `run_search`; the service stores the uploaded table's id and its worker hands the engine the
    file.  Empty: the worker's own device."""
    weights: str = ""
    """Trained weights of the full network (a state dict: ``.pt`` or ``.safetensors``) the supernet
    starts from (`engine.initial_weights`): their file for `run_search`; the service stores the
    upload's id and its worker hands the engine the file.  Empty: random initialisation."""

    def network(self, num_classes: int) -> dict[str, Any]:
        """The supernet's shape, as `models.NetSpec`'s fields: the one place where the spec's
        architecture fields, ``train.width_min`` (the narrowest width trained, so the narrowest the
        search may go) and ``search.divisor`` (the channel grid) come together."""
        return {
            "arch": self.arch,
            "num_classes": num_classes,
            "input_size": self.input_size,
            "width_mult": self.width_mult,
            "divisor": self.search.divisor,
            "width_min": self.train.width_min,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpec:
        """Build from JSON-like data; unknown keys are an error so typos never pass silently.

        With ``weights``, training fields not given take `PRETRAINED_TRAIN`'s values."""
        data = dict(data)
        if isinstance(data.get("export_formats"), list):
            data["export_formats"] = [LEGACY_FORMATS.get(f, f) for f in data["export_formats"]]
        if data.get("weights") and isinstance(data.get("train", {}), dict):
            data["train"] = with_pretrained_defaults(data.get("train", {}))
        nested = {"train": TrainSpec, "search": SearchSettings, "retrain": RetrainSpec}
        for key, kind in nested.items():
            if key in data and isinstance(data[key], dict):
                data[key] = _strict(kind, data[key], key)
        return _strict(cls, data, "spec")


def _strict(kind: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    return kind(**data)


# ---- the result ----------------------------------------------------------------------------------
# What `run_search` returns (as ``SearchResult.to_dict()``, also written to ``workdir/result.json``)
# and what every reader (worker, dashboard, command line) parses back with ``SearchResult.from_dict``.
# Optional figures are left out of the JSON when absent, so the files stay as they were.


@dataclass
class TrajectoryPoint:
    """One recorded point of a search: a greedy step (``removed``, ``channels``) or, for a MutualNet
    supernet, a width x resolution point (``ratio``, ``resolution``)."""

    index: int
    widths: dict[str, int]
    macs: int
    params: int
    latency_ms: float | None
    val_accuracy: float
    val_loss: float
    removed: str | None = None  # greedy: the group(s) slimmed to reach it (None for the full network)
    channels: dict[str, int] | None = None  # greedy: per-layer channels (the config-file form)
    ratio: float | None = None  # MutualNet: the uniform width ratio
    resolution: int | None = None  # MutualNet: the input size

    @property
    def is_mutual(self) -> bool:
        return self.resolution is not None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        unused = ("removed", "channels") if self.is_mutual else ("ratio", "resolution")
        for key in unused + (("channels",) if self.channels is None and not self.is_mutual else ()):
            del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrajectoryPoint:
        return _strict(cls, data, "trajectory point")


@dataclass
class BudgetAnswer:
    """One budget's answer: the configuration chosen for it, its figures and its files (relative to
    the work directory: ``config`` and one per export format).  ``latency_*`` describe the device
    the latency budgets are for; ``worker_latency_*`` the worker's own, beside a named table."""

    kind: str
    target: float
    macs: int
    params: int
    latency_ms: float | None
    val_accuracy: float
    val_loss: float
    channels: dict[str, int]
    files: dict[str, str]
    step: int | None = None  # greedy: the trajectory step it was chosen from
    ratio: float | None = None  # MutualNet: the point it was chosen from
    resolution: int | None = None
    test_accuracy: float | None = None  # retrained only
    latency_device: str | None = None
    latency_runtime: str | None = None
    worker_latency_ms: float | None = None
    worker_latency_device: str | None = None
    worker_latency_runtime: str | None = None

    def to_dict(self) -> dict[str, Any]:
        required = ("kind", "target", "macs", "params", "latency_ms", "val_accuracy", "val_loss", "channels", "files")
        return {k: v for k, v in asdict(self).items() if k in required or v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BudgetAnswer:
        return _strict(cls, data, "budget answer")


@dataclass
class UniformPoint:
    """The supernet at one uniform width ratio, BN calibrated and scored like the greedy candidates:
    a point of the width-multiplier baseline the trajectory is compared with."""

    ratio: float
    macs: int
    params: int
    val_accuracy: float
    val_loss: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UniformPoint:
        return _strict(cls, data, "uniform point")


@dataclass
class SupernetRef:
    """The trained supernet a search used: its cache key, checkpoint, and whether it was reused."""

    key: str
    path: str
    reused: bool


@dataclass
class SearchResult:
    """A finished search: an answer per budget, the trajectory (greedy steps or MutualNet points), the full
    network's point, the uniform baseline (greedy searches only), the supernet, timings in seconds
    by phase, the spec it answers (with its hash, so a finished work directory is recognised), and
    how many processes ran it (`engine.distributed`)."""

    budgets: list[BudgetAnswer]
    trajectory: list[TrajectoryPoint]
    full: TrajectoryPoint
    uniform: list[UniformPoint]
    supernet: SupernetRef
    timings: dict[str, float]
    spec: dict[str, Any]
    spec_hash: str
    ranks: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "budgets": [b.to_dict() for b in self.budgets],
            "trajectory": [p.to_dict() for p in self.trajectory],
            "full": self.full.to_dict(),
            "uniform": [u.to_dict() for u in self.uniform],
            "supernet": asdict(self.supernet),
            "timings": dict(self.timings),
            "spec": self.spec,
            "spec_hash": self.spec_hash,
            "ranks": self.ranks,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchResult:
        data = dict(data)
        data["budgets"] = [BudgetAnswer.from_dict(b) for b in data.get("budgets", [])]
        data["trajectory"] = [TrajectoryPoint.from_dict(p) for p in data.get("trajectory", [])]
        data["full"] = TrajectoryPoint.from_dict(data["full"])
        data["uniform"] = [UniformPoint.from_dict(u) for u in data.get("uniform", [])]
        data["supernet"] = _strict(SupernetRef, data["supernet"], "supernet")
        return _strict(cls, data, "result")


@dataclass(frozen=True)
class CacheFolders:
    """Where trained supernets and measured latency tables are kept between searches.  The caller
    names them (the worker from its settings, the command line from its environment); shared
    storage shares them between workers."""

    supernets: Path
    latency: Path

    @classmethod
    def beside(cls, workdir: Path | str) -> CacheFolders:
        """``supernets/`` and ``latency/`` next to ``workdir``: every job under one folder shares them."""
        parent = Path(workdir).resolve().parent
        return cls(parent / "supernets", parent / "latency")


ReportFn = Callable[[dict[str, Any]], None]
"""Progress callback.  Receives plain dicts, always with `phase` (one of PHASES) and `percent`
(0-100 over the whole job); training adds `epoch`, `epochs`, `step`, `loss`, `lr`, `images_per_s`,
`eta_s`; the greedy search adds `trajectory_step` (one recorded greedy step, see `run_search`),
`steps_done` and `eta_s` (None until a step has been timed; from the steps still to take to the last
budget, `engine.search_eta.SearchEta`); a notice for the search's log comes as `event`
(``{"kind", "message", "level"?, "data"?}``)."""

CancelFn = Callable[[], bool]
"""Returns True when the job should stop; checked between steps."""


class Cancelled(Exception):
    """Raised by `run_search` when its cancel check fires; the work directory keeps all progress."""
