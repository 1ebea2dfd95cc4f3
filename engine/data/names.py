"""Dataset SPEC strings (``digits``, ``cifar10:DIR``, ``imagefolder:DIR``), read one way by the API's
cheap checks (`app.spec_validation`, which loads nothing) and by the loaders (`engine.data`).
"""

from __future__ import annotations

from pathlib import Path

FOLDER_KINDS = ("cifar10", "imagefolder")
"""Dataset kinds that name a folder (``KIND:DIR``)."""
FIXED_CLASSES = {"digits": 10, "cifar10": 10}
"""Class counts known from the kind alone; an ImageFolder tree has one class per folder."""


class DataError(ValueError):
    """A dataset that cannot be loaded; the message names the spec, folder or file at fault."""


def parse_dataset(spec: str) -> tuple[str, str]:
    """``(kind, DIR)`` of a dataset SPEC (DIR empty for ``digits``); `DataError` for any other string."""
    kind, _, arg = spec.partition(":")
    if (kind == "digits" and not arg) or (kind in FOLDER_KINDS and arg):
        return kind, arg
    raise DataError(f"unknown dataset spec {spec!r}; use 'digits', 'cifar10:DIR' or 'imagefolder:DIR'")


def class_folders(tree: Path) -> list[Path]:
    """The class folders of an ImageFolder tree, by name (hidden folders are not classes)."""
    return sorted(p for p in tree.iterdir() if p.is_dir() and not p.name.startswith("."))
