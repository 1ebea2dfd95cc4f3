"""Request and response bodies of the API (pydantic v2), with the examples shown in OpenAPI.

The request models mirror `engine.spec` field for field (a test keeps them in step) and add what a
dataclass cannot say: bounds, descriptions, examples.  Defaults are read from the dataclasses so
the API and the library never disagree on them.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
)

import engine.spec as engine_spec
from engine.budgets import parse_target
from engine.spec import LEGACY_FORMATS, TRAIN_MODES
from store.settings import Queue

TrainMode = Literal[TRAIN_MODES]  # type: ignore[valid-type]
Item = TypeVar("Item")


MAX_COUNT = 10**15
"""The largest MACs or params budget taken (a petaMAC; today's largest networks are ~10^12)."""
MAX_EPOCHS = 100_000
"""A static bound on every epoch count; AUTOSLIM_MAX_EPOCHS (checked in `app.spec_validation`) is lower."""
MAX_SAMPLES = 1_000_000
"""Held-out images scored or calibrated on: a bound, so a request cannot load a whole split many times over."""


MAX_MS = 1e6
"""The largest latency budget taken (a thousand seconds for one image)."""


def budget(value: Any, top: float, integral: bool) -> int | float | str:
    """One budget as given: a number, a string with a k/M/G suffix (``"2.5M"`` -> 2500000), or a
    share of the full network (``"40%"``, kept as a string and resolved by the search).  One
    validator for all forms, so an error points at the budget itself, not at a member of a union."""
    if isinstance(value, str):
        if len(value) > 40:
            raise ValueError("a budget is at most 40 characters")
        try:
            value = float(value)  # "1e999", "inf", "nan" are numbers to check, not amounts to parse
        except ValueError:
            value = parse_target(value)
            if isinstance(value, str):
                return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("a budget is a number, a string such as 150M, or a share such as 40%")
    if not math.isfinite(value):
        raise ValueError("a budget must be a finite number")
    if not 0 < value <= top:
        raise ValueError(f"a budget must be greater than 0 and at most {top:.0e}, not {value:.6g}")
    if integral:
        return round(value)
    return float(value)


BUDGET_SCHEMA = {"type": "string", "maxLength": 40, "description": "an amount such as 150M, or a share such as 40%"}
Count = Annotated[
    int | str,
    PlainValidator(lambda v: budget(v, MAX_COUNT, integral=True)),
    WithJsonSchema({"anyOf": [{"type": "integer", "exclusiveMinimum": 0, "maximum": MAX_COUNT}, BUDGET_SCHEMA]}),
]
Milliseconds = Annotated[
    float | str,
    PlainValidator(lambda v: budget(v, MAX_MS, integral=False)),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_MS}, BUDGET_SCHEMA]}),
]


ModelFormat = Annotated[Literal["pt", "onnx", "torchscript"], BeforeValidator(lambda v: LEGACY_FORMATS.get(v, v))]
"""An export format (`engine.spec.MODEL_FORMATS`); the old name ``ts`` is read as ``torchscript``."""


class Strict(BaseModel):
    """Unknown fields are errors (a typo must not silently fall back to a default), as are inf/nan."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TrainSpec(Strict):
    """Supernet training (AutoSlim: nonuniform US-Net with the sandwich rule and inplace distillation)."""

    mode: TrainMode = engine_spec.TrainSpec.mode
    epochs: int = Field(
        engine_spec.TrainSpec.epochs,
        ge=1,
        le=MAX_EPOCHS,
        description="Supernet training epochs (at most AUTOSLIM_MAX_EPOCHS).",
    )
    batch_size: int = Field(engine_spec.TrainSpec.batch_size, ge=1, le=8192)
    lr: float = Field(engine_spec.TrainSpec.lr, gt=0, le=10)
    momentum: float = Field(engine_spec.TrainSpec.momentum, ge=0, lt=1)
    weight_decay: float = Field(engine_spec.TrainSpec.weight_decay, ge=0, le=1)
    warmup_epochs: float = Field(engine_spec.TrainSpec.warmup_epochs, ge=0, le=MAX_EPOCHS)
    label_smoothing: float = Field(engine_spec.TrainSpec.label_smoothing, ge=0, lt=1)
    num_sandwich: int = Field(
        engine_spec.TrainSpec.num_sandwich, ge=2, le=16, description="Widths per step: max, min, random."
    )
    inplace_distill: bool = engine_spec.TrainSpec.inplace_distill
    width_min: float = Field(engine_spec.TrainSpec.width_min, gt=0, le=1, description="Narrowest width ratio trained.")
    resolutions: list[Annotated[int, Field(ge=8, le=1024)]] = Field(default_factory=list, max_length=8)
    teacher: Literal["full", "original"] = Field(
        engine_spec.TrainSpec.teacher,
        description=(
            "Who narrower widths distil from: the supernet's moving full width, or the frozen network training "
            "started from (`original`, needs weights; the default with weights)."
        ),
    )


class SearchSettings(Strict):
    """Greedy slimming: channel bins per layer group and the held-out sizes used to score candidates."""

    bins: int = Field(engine_spec.SearchSettings.bins, ge=2, le=100)
    divisor: int = Field(engine_spec.SearchSettings.divisor, ge=1, le=64)
    val_fraction: float = Field(engine_spec.SearchSettings.val_fraction, gt=0, lt=1)
    score_size: int = Field(engine_spec.SearchSettings.score_size, ge=10, le=MAX_SAMPLES)
    calib_size: int = Field(engine_spec.SearchSettings.calib_size, ge=10, le=MAX_SAMPLES)
    calib_batch_size: int = Field(engine_spec.SearchSettings.calib_batch_size, ge=1, le=8192)
    bins_per_step: int = Field(
        engine_spec.SearchSettings.bins_per_step,
        ge=1,
        le=16,
        description="Most bins one greedy step removes far from a budget (1: exact search).",
    )
    race_fraction: float = Field(
        engine_spec.SearchSettings.race_fraction,
        ge=0,
        lt=1,
        description="Share of the data a first scoring round uses to drop clear losers (0: off).",
    )
    race_z: float = Field(
        engine_spec.SearchSettings.race_z, gt=0, le=10, description="Standard errors a dropped candidate trails by."
    )
    channels_last: bool = Field(
        engine_spec.SearchSettings.channels_last, description="Search in NHWC memory layout (faster on CPU)."
    )
    criterion: Literal["accuracy", "loss"] = Field(
        engine_spec.SearchSettings.criterion, description="What ranks a greedy step's candidates first."
    )
    fill: bool = Field(engine_spec.SearchSettings.fill, description="Widen each answer while it still fits its budget.")


class RetrainSpec(Strict):
    """Optional fine-tuning of each chosen configuration."""

    epochs: int = Field(engine_spec.RetrainSpec.epochs, ge=0, le=MAX_EPOCHS, description="At most AUTOSLIM_MAX_EPOCHS.")
    from_scratch: bool = engine_spec.RetrainSpec.from_scratch
    lr: float = Field(engine_spec.RetrainSpec.lr, gt=0, le=10)


class SearchCreate(Strict):
    """A search to run: which network, which data, which budgets."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "arch": "mobilenet_v2",
                    "dataset": "digits",
                    "width_mult": 0.35,
                    "macs": ["2M", 1500000],
                    "train": {"epochs": 2, "batch_size": 64},
                    "search": {"bins": 8},
                }
            ]
        },
    )

    arch: str = Field(
        description="A registered architecture (`autoslim archs`).", examples=["mobilenet_v2"], max_length=200
    )
    dataset: str = Field(
        description="`digits`, `cifar10:DIR` or `imagefolder:DIR`; DIR under a data root.",
        examples=["digits"],
        max_length=500,
    )
    macs: list[Count] = Field(
        default_factory=list,
        max_length=32,
        description="MACs budgets (the papers' FLOPs); numbers, strings like `150M`, or "
        "shares of the full network like `40%`.",
    )
    latency_ms: list[Milliseconds] = Field(default_factory=list, max_length=32)
    params: list[Count] = Field(default_factory=list, max_length=32)
    input_size: int = Field(32, ge=8, le=1024)
    width_mult: float = Field(1.0, gt=0, le=4)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")
    train: TrainSpec = Field(default_factory=TrainSpec)
    search: SearchSettings = Field(default_factory=SearchSettings)
    retrain: RetrainSpec = Field(default_factory=RetrainSpec)
    export_formats: list[ModelFormat] = Field(default_factory=lambda: ["pt", "onnx"], max_length=3)
    queue: Queue | None = Field(None, description="Worker queue; default AUTOSLIM_DEFAULT_QUEUE.")
    latency_table: str = Field(
        "",
        pattern=r"^[0-9a-f]{0,32}$",
        description=(
            "An uploaded latency table's id (POST /latency-tables): `latency_ms` budgets are milliseconds on its "
            "device and runtime. Empty: on the worker's device."
        ),
    )
    weights: str = Field(
        "",
        pattern=r"^[0-9a-f]{0,32}$",
        description=(
            "Uploaded weights' id (POST /weights): the supernet starts from them, and training fields not given take "
            "the short pretrained recipe (3 epochs, lr 0.01, no warm-up). Empty: random initialisation."
        ),
    )


class Links(BaseModel):
    self: str
    config: str
    trajectory: str
    events: str
    cancel: str
    retry: str


class SearchCreated(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f2a9c0e5b7d4e1f8a6b2c3d4e5f6a7b",
                    "status": "queued",
                    "links": {"self": "/searches/3f2a...", "config": "/searches/3f2a.../config"},
                }
            ]
        }
    )

    id: str
    status: str
    links: Links


class BudgetSummary(BaseModel):
    kind: str = Field(examples=["macs"])
    target: float
    macs: int
    params: int
    latency_ms: float | None = None
    latency_device: str | None = Field(None, description="The device `latency_ms` is predicted for.")
    latency_runtime: str | None = Field(None, description="Its runtime, version, provider, threads, batch size.")
    worker_latency_ms: float | None = Field(None, description="With a latency table: on the worker's own device.")
    worker_latency_device: str | None = None
    worker_latency_runtime: str | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    config: str = Field(description="Link to this budget's channel config.")


class SupernetInfo(BaseModel):
    key: str
    reused: bool | None


class SearchSummary(BaseModel):
    """One line of the search list."""

    id: str
    owner: str
    arch: str
    dataset: str
    status: str
    phase: str | None
    percent: float
    budgets: dict[str, list[float | str]] = Field(
        description="Requested targets by kind: amounts, or shares of the full network such as `40%`."
    )
    created_at: datetime
    finished_at: datetime | None
    links: Links


class SearchDetail(SearchSummary):
    """Everything about one search: progress, timings, error, and a summary per budget."""

    spec: dict[str, Any]
    queue: str
    eta_s: float | None
    progress: dict[str, Any] | None
    attempts: int
    cancel_requested: bool
    error: str | None
    timings: dict[str, Any] | None
    summary: dict[str, Any] | None
    supernet: SupernetInfo | None
    results: list[BudgetSummary]
    started_at: datetime | None
    heartbeat_at: datetime | None
    updated_at: datetime


class Page(BaseModel, Generic[Item]):
    """One page of a listing (searches, latency tables, weights): its rows, and how many match in all."""

    items: list[Item]
    total: int
    limit: int
    offset: int


class SearchPage(Page[SearchSummary]):
    pass


class UploadOut(BaseModel):
    """What every upload (a latency table, weights) shows: who owns it, its label, size and age."""

    id: str
    owner: str
    name: str | None
    size_bytes: int
    created_at: datetime


class BudgetConfig(BaseModel):
    kind: str
    target: float
    macs: int
    config: dict[str, Any] = Field(description="The channel config: `models.ChannelConfig.from_dict` reads it.")


class ConfigSet(BaseModel):
    search_id: str
    budgets: list[BudgetConfig]


class TrajectoryPoint(BaseModel):
    step: int
    macs: int | None
    params: int | None
    accuracy: float | None
    data: dict[str, Any] = Field(description="The step exactly as the engine reported it.")


class Trajectory(BaseModel):
    search_id: str
    status: str
    steps: list[TrajectoryPoint]


class EventOut(BaseModel):
    at: datetime
    level: str
    kind: str
    message: str
    data: dict[str, Any] | None


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok", "database": "ok", "broker": "ok"}]})

    status: Literal["ok", "unavailable"]
    database: str
    broker: str


class TokenCreate(Strict):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] = Field(
        examples=["alice"], description="The owner's name; leading and trailing spaces are dropped."
    )
    admin: StrictBool = Field(False, description="true or false (not 0 / 1).")


class TokenCreated(BaseModel):
    name: str
    role: str
    token: str = Field(description="The secret; shown once, stored only as a hash.")
