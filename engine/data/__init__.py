"""Datasets by SPEC string, with a held-out validation split and tensor samples for calibration.

``load_data("digits")``, ``load_data("cifar10:DIR")``, ``load_data("imagefolder:DIR")`` give the
same `DataSplits`: augmented training images, the same images un-augmented (BN calibration), a
validation split held out of the training data (AutoSlim searches on images the supernet never
trained on), and the dataset's own test split, used for final accuracy only.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from engine.data.batches import Batches
from engine.data.images import ImageFiles, ImageTensors, PadCropFlip, ResizeCentre, ResizedCropFlip, unchanged
from engine.data.names import DataError, class_folders, parse_dataset

__all__ = ["DataError", "DataSplits", "as_batches", "load_data"]

# Mean / std of the digits at 32 px (pixel values / 16), over the whole set.
DIGITS_NORM = ((0.305,), (0.33,))
CIFAR10_NORM = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SMALL_IMAGE_MAX = 64
"""Inputs up to this size are treated as whole small images (CIFAR-like): resized, never centre-cropped."""
OWN_TEST_FRACTION = 0.2
"""Datasets without a test split (digits, a single ImageFolder tree) hold out this fraction, fixed seed."""


@dataclass
class DataSplits:
    train: Dataset
    train_plain: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_size: int
    name: str


def load_data(
    spec: str, input_size: int = 32, val_fraction: float = 0.1, seed: int = 0, data_roots: list[Path] | None = None
) -> DataSplits:
    """Load the dataset a SPEC names; relative DIRs are looked up in ``data_roots`` (then the cwd).

    The validation split is stratified by class and depends only on ``seed`` and ``val_fraction``;
    the test split never depends on either.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if input_size < 8:
        raise DataError(f"input size {input_size} is too small (at least 8 px)")
    kind, arg = parse_dataset(spec)
    if kind == "digits":
        return _digits(input_size, val_fraction, seed)
    loader = _cifar10 if kind == "cifar10" else _imagefolder
    return loader(_resolve(arg, data_roots), input_size, val_fraction, seed)


def as_batches(
    dataset: Dataset, limit: int | None = None, batch_size: int = 200, seed: int = 0, device: torch.device | str = "cpu"
) -> Batches:
    """A fixed random sample of ``dataset`` (``limit`` images, all if fewer) stacked into tensors.

    Calibration and scoring run over the same images for every candidate, so the sample is drawn
    once, by seed, and kept in memory on ``device``.
    """
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    if limit is not None:
        order = order[:limit]
    if len(order) == 0:
        raise DataError("cannot sample from an empty dataset")
    items = [dataset[i] for i in order.tolist()]
    x = torch.stack([img for img, _ in items])
    y = torch.tensor([int(label) for _, label in items], dtype=torch.long)
    return Batches(x.to(device), y.to(device), batch_size)


# ---- splits -----------------------------------------------------------------------------------
def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, held_out) index tensors: ``fraction`` of every class held out, chosen by ``seed``.

    At least one image per class is held out and at least one kept when the class has two.
    """
    generator = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_held = min(max(1, round(fraction * len(members))), max(len(members) - 1, 1))
        held.append(members[:n_held])
        keep.append(members[n_held:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


def _tensor_splits(
    train: ImageTensors,
    test: ImageTensors,
    augment,
    num_classes: int,
    input_size: int,
    val_fraction: float,
    seed: int,
    name: str,
) -> DataSplits:
    keep, held = stratified_split(train.labels, val_fraction, seed)
    return DataSplits(
        train.subset(keep, augment),
        train.subset(keep, None),
        train.subset(held, None),
        test,
        num_classes,
        input_size,
        name,
    )


# ---- digits -----------------------------------------------------------------------------------
def _digits(input_size: int, val_fraction: float, seed: int) -> DataSplits:
    """scikit-learn's 8x8 digits (0-16), upsampled once to ``input_size``; grey replicated to RGB."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=(input_size, input_size), mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.tensor(raw.target, dtype=torch.long)
    full = ImageTensors(images, labels, *DIGITS_NORM)
    rest, test = stratified_split(labels, OWN_TEST_FRACTION, 0)
    # A shift of about one original pixel; no flip (mirrored digits are not digits).
    augment = PadCropFlip(pad=max(1, input_size // 8), flip=False)
    return _tensor_splits(
        full.subset(rest, None), full.subset(test, None), augment, 10, input_size, val_fraction, seed, "digits"
    )


# ---- CIFAR-10 ---------------------------------------------------------------------------------
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def _cifar10(root: Path, input_size: int, val_fraction: float, seed: int) -> DataSplits:
    """CIFAR-10 from the python batches (in DIR or DIR/cifar-10-batches-py) or train.npz + test.npz."""
    if (root / "train.npz").exists() or (root / "test.npz").exists():
        train_x, train_y = _read_npz(inside(root, root / "train.npz"))
        test_x, test_y = _read_npz(inside(root, root / "test.npz"))
    else:
        folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
        if not any((folder / name).exists() for name in [*CIFAR_BATCHES, "test_batch"]):
            raise DataError(
                f"{root} holds neither CIFAR-10 python batches (data_batch_1..5, test_batch) nor train.npz + test.npz"
            )
        parts = [_read_pickle_batch(inside(root, folder / name)) for name in CIFAR_BATCHES]
        train_x, train_y = torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
        test_x, test_y = _read_pickle_batch(inside(root, folder / "test_batch"))
    for labels, where in ((train_y, "train"), (test_y, "test")):
        if labels.min() < 0 or labels.max() >= 10:
            raise DataError(f"{root}: {where} labels must be in 0..9 for CIFAR-10")
    train_x, test_x = _resize_uint8(train_x, input_size), _resize_uint8(test_x, input_size)
    augment = PadCropFlip(pad=max(1, input_size // 8), flip=True)
    return _tensor_splits(
        ImageTensors(train_x, train_y, *CIFAR10_NORM),
        ImageTensors(test_x, test_y, *CIFAR10_NORM),
        augment,
        10,
        input_size,
        val_fraction,
        seed,
        f"cifar10:{root}",
    )


def _read_pickle_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch {path} is missing")
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {type(err).__name__}: {err}") from None
    if len(data) != len(labels) or len(data) == 0:
        raise DataError(f"CIFAR-10 batch {path} has {len(data)} images and {len(labels)} labels")
    return torch.from_numpy(data.copy()), torch.from_numpy(labels)


def _read_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``x``: (N, H, W, C) uint8 with C = 1 or 3; ``y``: (N,) integer labels."""
    if not path.is_file():
        raise DataError(f"{path} is missing (cifar10 npz layout needs train.npz and test.npz)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            x, y = np.asarray(arrays["x"]), np.asarray(arrays["y"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"cannot read {path}: {type(err).__name__}: {err}") from None
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.dtype != np.uint8:
        raise DataError(f"{path}: x must be uint8 (N, H, W, C) with C 1 or 3, got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or len(x) == 0 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y must hold one integer label per image, got {y.dtype} {y.shape} for {len(x)} images")
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y.astype(np.int64))


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize once at load time (no-op at the native size), keeping uint8 storage."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in images.split(1000):
        resized = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(resized.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


# ---- ImageFolder ------------------------------------------------------------------------------
def _imagefolder(root: Path, input_size: int, val_fraction: float, seed: int) -> DataSplits:
    """DIR/train + DIR/test (or DIR/val) class folders, or one class-folder tree split here."""
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        classes, train_paths, train_y = _scan_classes(root / "train", root)
        test_classes, test_paths, test_y = _scan_classes(test_dir, root)
        if test_classes != classes:
            raise DataError(f"{test_dir} has classes {test_classes} but {root / 'train'} has {classes}")
    else:
        classes, paths, labels = _scan_classes(root, root)
        rest, held = stratified_split(labels, OWN_TEST_FRACTION, 0)
        train_paths, train_y = [paths[i] for i in rest.tolist()], labels[rest]
        test_paths, test_y = [paths[i] for i in held.tolist()], labels[held]
    if input_size <= SMALL_IMAGE_MAX:
        prepare = ResizeCentre(input_size, 1.0)
        augment = ResizedCropFlip(input_size, scale=(0.5, 1.0))
    else:
        prepare = ResizeCentre(input_size, 0.875)
        augment = ResizedCropFlip(input_size, scale=(0.08, 1.0))
    everything = ImageFiles(train_paths, train_y, prepare, *IMAGENET_NORM)
    keep, held = stratified_split(train_y, val_fraction, seed)
    return DataSplits(
        everything.subset(keep, unchanged, augment),
        everything.subset(keep, prepare, None),
        everything.subset(held, prepare, None),
        ImageFiles(test_paths, test_y, prepare, *IMAGENET_NORM),
        len(classes),
        input_size,
        f"imagefolder:{root}",
    )


def inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves inside the dataset folder ``root``, else a DataError: a link must not
    lead a search out of the folder the API checked to be under a data root."""
    real = path.resolve()
    if real != root and root not in real.parents:
        raise DataError(f"{path} links outside the dataset folder {root} (to {real})")
    return path


def _scan_classes(folder: Path, root: Path) -> tuple[list[str], list[Path], torch.Tensor]:
    classes = [p.name for p in class_folders(folder)]
    if not classes:
        raise DataError(f"{folder} has no class folders (expected {folder}/<class>/<image>)")
    paths, labels = [], []
    for label, name in enumerate(classes):
        inside(root, folder / name)
        files = sorted(
            inside(root, p) for p in (folder / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(f"class folder {folder / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        paths += files
        labels += [label] * len(files)
    return classes, paths, torch.tensor(labels, dtype=torch.long)


def _resolve(arg: str, data_roots: list[Path] | None) -> Path:
    path = Path(arg).expanduser()
    candidates = [path] if path.is_absolute() else [root / path for root in (data_roots or [])] + [path]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    if any(c.exists() for c in candidates):
        raise DataError(f"dataset path {arg} is not a directory")
    raise DataError(
        f"dataset directory {arg} does not exist"
        + (f" (looked in {', '.join(str(c) for c in candidates)})" if len(candidates) > 1 else "")
    )
