"""The plain-data contract of a search job: what goes into `run_search` and what comes out.

Kept free of torch so the API, the worker and the command line can build, validate and store a
spec without importing the training stack.  Everything here round-trips through JSON
(`to_dict` / `from_dict`) because specs live in the database and results are served as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Literal

TrainMode = Literal["snet", "usnet", "usnet-nonuniform", "mutual"]
TRAIN_MODES: tuple[str, ...] = ("snet", "usnet", "usnet-nonuniform", "mutual")
TEACHERS: tuple[str, ...] = ("full", "original")
CRITERIA: tuple[str, ...] = ("accuracy", "loss")
PHASES: tuple[str, ...] = ("data", "train", "search", "retrain", "export", "done")


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
    export_formats: list[str] = field(default_factory=lambda: ["pt", "onnx"])
    latency_table: str = ""
    """A latency table (`autoslim profile`) whose device the latency budgets are for: its file for
    `run_search`; the service stores the uploaded table's id and its worker hands the engine the
    file.  Empty: the worker's own device."""
    weights: str = ""
    """Trained weights of the full network (a state dict: ``.pt`` or ``.safetensors``) the supernet
    starts from (`engine.initial_weights`): their file for `run_search`; the service stores the
    upload's id and its worker hands the engine the file.  Empty: random initialisation."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchSpec":
        """Build from JSON-like data; unknown keys are an error so typos never pass silently.

        With ``weights``, training fields not given take `PRETRAINED_TRAIN`'s values."""
        data = dict(data)
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


ReportFn = Callable[[dict[str, Any]], None]
"""Progress callback.  Receives plain dicts, always with `phase` (one of PHASES) and `percent`
(0-100 over the whole job); training adds `epoch`, `epochs`, `step`, `loss`, `lr`, `images_per_s`,
`eta_s`; the greedy search adds `trajectory_step` (one recorded greedy step, see `run_search`),
`steps_done` and `eta_s` (None until a step has been timed; from the MACs, params or latency still to
remove, `engine.progress.RemainingWork`); a notice for the search's log comes as `event`
(``{"kind", "message", "level"?, "data"?}``)."""

CancelFn = Callable[[], bool]
"""Returns True when the job should stop; checked between steps."""


class Cancelled(Exception):
    """Raised by `run_search` when its cancel check fires; the work directory keeps all progress."""
