"""Checks a submitted search against the model library and the configured data, cheaply.

Everything a worker would only find out hours later (an unknown architecture, a dataset folder
that is not there, a budget no configuration can meet) is rejected here with the field named, so a
request either gets a 422 that says what to fix or a search that can run.  Datasets are never
loaded in the API process: a folder's presence and its class folders are enough.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import models
from app.schemas import SearchCreate
from engine.budgets import Budget, BudgetError, check_budgets, feasible_range, resolve_target
from engine.data.names import FIXED_CLASSES, DataError, class_folders, parse_dataset
from engine.spec import BUDGET_KINDS, SearchSpec
from store.settings import Settings

Loc = tuple[str | int, ...]
CIFAR10_FILES = ("data_batch_1", "train.npz")


class FieldError(ValueError):
    """Bad input in one field of the request; becomes a 422 naming ``loc`` (FastAPI's error format)."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc, self.message = loc, message


def validated_spec(body: SearchCreate, settings: Settings) -> SearchSpec:
    """The engine spec for a request, with the dataset path made absolute; raises `FieldError`."""
    models.allow_modules(settings.model_modules)
    try:
        models.check_arch(body.arch)
    except KeyError as err:
        raise FieldError(("body", "arch"), err.args[0]) from None
    for part, field in (("train", "epochs"), ("train", "warmup_epochs"), ("retrain", "epochs")):
        epochs = getattr(getattr(body, part), field)
        if epochs > settings.max_epochs:
            raise FieldError(
                ("body", part, field), f"{epochs:g} epochs is more than the limit of {settings.max_epochs}"
            )
    if body.train.teacher == "original" and not body.weights:
        raise FieldError(
            ("body", "train", "teacher"),
            "teacher 'original' distils from the trained network the supernet starts from: give weights",
        )
    dataset, num_classes = check_dataset(body.dataset, settings.resolved_data_roots)
    check_request_budgets(body, num_classes)
    data = body.model_dump(exclude={"queue"})
    data["dataset"] = dataset
    if body.weights:  # the fields the request left out take the pretrained recipe (SearchSpec.from_dict)
        data["train"] = body.train.model_dump(exclude_unset=True)
    return SearchSpec.from_dict(data)


def check_request_budgets(body: SearchCreate, num_classes: int) -> None:
    """Every budget list: not all empty, no repeats, each inside what the channel space can reach."""
    if not (body.macs or body.latency_ms or body.params):
        raise FieldError(("body", "macs"), "give at least one budget: macs, latency_ms or params")
    network = SearchSpec.from_dict(body.model_dump(exclude={"queue"})).network(num_classes)
    ranges = _ranges(tuple(sorted(network.items())))
    for kind in BUDGET_KINDS:
        targets = getattr(body, kind)
        if len(set(targets)) != len(targets):
            raise FieldError(("body", kind), f"repeated {kind} budget")
        for index, target in enumerate(targets):
            if kind in ranges:
                try:
                    check_budgets([Budget(kind, resolve_target(target, ranges[kind]["max"], kind))], ranges)
                except BudgetError as err:
                    raise FieldError(("body", kind, index), str(err)) from None


@lru_cache(maxsize=256)
def _ranges(network: tuple[tuple[str, Any], ...]) -> dict[str, dict[str, Any]]:
    """Building the supernet takes a moment; the same network (`SearchSpec.network`'s items) is
    asked about again and again."""
    net = dict(network)
    try:
        return feasible_range(**net)
    except (ValueError, RuntimeError) as err:  # e.g. a width_mult too small for the divisor
        raise FieldError(("body", "width_mult"), f"cannot build {net['arch']} with these settings: {err}") from None


def check_dataset(spec: str, roots: list[Path]) -> tuple[str, int]:
    """(spec with an absolute folder, number of classes) for a dataset SPEC, without loading it."""
    try:
        kind, arg = parse_dataset(spec)
    except DataError as err:
        raise FieldError(("body", "dataset"), str(err)) from None
    if kind == "digits":
        return "digits", FIXED_CLASSES["digits"]
    folder = resolve_under_roots(arg, roots)
    if kind == "cifar10":
        if not any((folder / name).is_file() for name in CIFAR10_FILES):
            raise FieldError(("body", "dataset"), f"{arg} holds no CIFAR-10 data ({' or '.join(CIFAR10_FILES)})")
        return f"cifar10:{folder}", FIXED_CLASSES["cifar10"]
    return f"imagefolder:{folder}", count_classes(folder, arg, roots)


def resolve_under_roots(arg: str, roots: list[Path]) -> Path:
    """The folder ``arg`` names, which must lie under a configured data root (no ``..`` escapes)."""
    if not roots:
        raise FieldError(
            ("body", "dataset"), "no data roots are configured (AUTOSLIM_DATA_ROOTS); only 'digits' can be searched"
        )
    if "\x00" in arg:
        raise FieldError(("body", "dataset"), "a dataset path cannot hold a NUL character")
    try:
        path = Path(arg).expanduser()
        candidates = [path.resolve()] if path.is_absolute() else [(root / path).resolve() for root in roots]
        inside = [c for c in candidates if under_roots(c, roots) and c.is_dir()]
    except OSError as err:  # a name over 255 characters, a path over PATH_MAX, a loop of links
        raise FieldError(("body", "dataset"), f"cannot use {arg[:80]!r}: {err.strerror or err}") from None
    if not any(under_roots(c, roots) for c in candidates):
        raise FieldError(("body", "dataset"), f"{arg} is outside the data roots ({', '.join(str(r) for r in roots)})")
    if inside:
        return inside[0]
    raise FieldError(
        ("body", "dataset"), f"dataset folder {arg} does not exist under {', '.join(str(r) for r in roots)}"
    )


def under_roots(path: Path, roots: list[Path]) -> bool:
    """True for a resolved ``path`` that is a data root or lies below one."""
    return any(path == root or root in path.parents for root in roots)


def count_classes(folder: Path, arg: str, roots: list[Path]) -> int:
    """Class folders of an ImageFolder tree (``DIR/train/<class>`` or ``DIR/<class>``); a class
    folder that is a link leading out of the data roots is refused (the worker would read it)."""
    tree = folder / "train" if (folder / "train").is_dir() else folder
    classes = class_folders(tree)
    for path in classes:
        if not under_roots(path.resolve(), roots):
            raise FieldError(("body", "dataset"), f"class folder {path.name} of {arg} links outside the data roots")
    if len(classes) < 2:
        raise FieldError(("body", "dataset"), f"{arg} needs at least 2 class folders, found {len(classes)}")
    return len(classes)
