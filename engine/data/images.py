"""Dataset classes and augmentations behind `engine.data`: images in memory or as files.

Every random choice an augmentation makes is drawn from an explicit ``torch.Generator``.  An item
key may be a plain index (randomness from torch's global generator, which DataLoader seeds per
worker, so ordinary loaders work) or an ``(index, seed)`` pair: the training loop passes pairs
derived from (seed, epoch, position), which makes every augmented batch a pure function of those
numbers.  That is what lets a run resumed mid-epoch, with or without loader workers, see exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from engine.data.names import DataError

ItemKey = int | tuple[int, int]
Augment = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def _split_key(key: ItemKey) -> tuple[int, torch.Generator | None]:
    if isinstance(key, tuple):
        index, seed = key
        return int(index), torch.Generator().manual_seed(int(seed))
    return int(key), None


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """An integer in [0, high] inclusive."""
    return int(torch.randint(high + 1, (), generator=generator))


class PadCropFlip:
    """Random crop after zero padding, optionally with a horizontal flip: the CIFAR augmentation.

    Applied before normalisation, so the padding is black (CIFAR) or background (digits).  Digits
    get no flip: a mirrored 2 or 7 is not a digit.
    """

    def __init__(self, pad: int, flip: bool) -> None:
        self.pad, self.flip = pad, flip

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        h, w = img.shape[-2:]
        if self.pad:
            padded = F.pad(img, (self.pad,) * 4)
            top, left = _randint(2 * self.pad, generator), _randint(2 * self.pad, generator)
            img = padded[:, top : top + h, left : left + w]
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            img = img.flip(-1)
        return img


class ResizedCropFlip:
    """RandomResizedCrop + horizontal flip (the ImageNet augmentation), drawing from a generator.

    Same sampling as torchvision's RandomResizedCrop (10 tries of area and log-aspect, then a
    centre crop), reimplemented because torchvision's draws from the global generator only.
    """

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size, self.scale, self.ratio = size, scale, ratio

    def box(self, h: int, w: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            area = h * w * _uniform(*self.scale, generator)
            aspect = math.exp(_uniform(log_lo, log_hi, generator))
            cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                return _randint(h - ch, generator), _randint(w - cw, generator), ch, cw
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side, side

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        h, w = img.shape[-2:]
        top, left, ch, cw = self.box(h, w, generator)
        crop = img[None, :, top : top + ch, left : left + cw]
        out = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)[0]
        if float(torch.rand((), generator=generator)) < 0.5:
            out = out.flip(-1)
        return out


class Normalised(Dataset):
    """Common item path: fetch an image in [0, 1], augment it, replicate to 3 channels, normalise."""

    def __init__(
        self, labels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], augment: Augment | None
    ) -> None:
        self.labels = labels.long()
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> torch.Tensor:
        """The image at ``index`` as float (C, H, W) in [0, 1] at the dataset's input size."""
        raise NotImplementedError

    def __getitem__(self, key: ItemKey) -> tuple[torch.Tensor, int]:
        index, generator = _split_key(key)
        img = self.image(index)
        if self.augment is not None:
            img = self.augment(img, generator)
        img = (img.expand(3, -1, -1) - self.mean) / self.std
        return img, int(self.labels[index])


class ImageTensors(Normalised):
    """Images held in memory as (N, C, H, W) uint8 (0-255) or float (0-1), C = 1 or 3.

    Resizing to the input size happens once, when the dataset is built, never per item.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: Augment | None = None,
    ) -> None:
        super().__init__(labels, mean, std, augment)
        self.images = images

    def image(self, index: int) -> torch.Tensor:
        img = self.images[index]
        return img.float() / 255 if img.dtype == torch.uint8 else img

    def subset(self, indices: torch.Tensor, augment: Augment | None) -> ImageTensors:
        return ImageTensors(
            self.images[indices],
            self.labels[indices],
            tuple(self.mean.flatten().tolist()),
            tuple(self.std.flatten().tolist()),
            augment,
        )


class ImageFiles(Normalised):
    """Images read from files on access (ImageFolder trees); a file that cannot be decoded is a DataError."""

    def __init__(
        self,
        paths: list[Path],
        labels: torch.Tensor,
        prepare: Callable[[torch.Tensor], torch.Tensor],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: Augment | None = None,
    ) -> None:
        super().__init__(labels, mean, std, augment)
        self.paths = paths
        self.prepare = prepare  # deterministic resize for evaluation; identity when training augments

    def image(self, index: int) -> torch.Tensor:
        return self.prepare(read_image(self.paths[index]))

    def subset(
        self, indices: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor], augment: Augment | None
    ) -> ImageFiles:
        keep = indices.tolist()
        return ImageFiles(
            [self.paths[i] for i in keep],
            self.labels[indices],
            prepare,
            tuple(self.mean.flatten().tolist()),
            tuple(self.std.flatten().tolist()),
            augment,
        )


def read_image(path: Path) -> torch.Tensor:
    """Decode an image file to float RGB (3, H, W) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None
    return pil_to_tensor(rgb).float() / 255


class ResizeCentre:
    """Evaluation transform: shorter side to size / crop_fraction, then the centre size x size crop.

    A class rather than a closure so that datasets pickle into DataLoader worker processes.
    """

    def __init__(self, size: int, crop_fraction: float) -> None:
        self.size, self.crop_fraction = size, crop_fraction

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        short = round(self.size / self.crop_fraction)
        new_h, new_w = (
            (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
        )
        out = F.interpolate(img[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)[0]
        top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
        return out[:, top : top + self.size, left : left + self.size]


def unchanged(img: torch.Tensor) -> torch.Tensor:
    """The identity ``prepare`` for training images: the random crop does the resizing."""
    return img
