"""Dataset loading from every source type, the held-out split, tensor samples and the errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import CIFAR10_NORM, DataError, as_batches, load_data, stratified_split
from engine.data.images import PadCropFlip, ResizedCropFlip


def _denormalise(x: torch.Tensor, norm) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in norm)
    return x * std + mean


def _write_cifar_batches(folder: Path, per_batch: int = 4) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with (folder / name).open("wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
        written[name] = data
    return written


def _write_npz(folder: Path, n_train: int = 40, n_test: int = 10, size: int = 32) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name, n in (("train", n_train), ("test", n_test)):
        np.savez(
            folder / f"{name}.npz", x=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), y=np.arange(n) % 10
        )


def _write_tree(folder: Path, classes=("cat", "dog", "emu"), per_class: int = 6, size: int = 20) -> None:
    rng = np.random.default_rng(2)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


# ---- digits -------------------------------------------------------------------------------------
def test_digits_splits_shapes_and_sizes(digits16):
    d = digits16
    assert (d.num_classes, d.input_size, d.name) == (10, 16, "digits")
    assert len(d.train) == len(d.train_plain)
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    assert 0.18 < len(d.test) / 1797 < 0.22 and 0.08 < len(d.val) / (len(d.train) + len(d.val)) < 0.12
    x, y = d.train_plain[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and 0 <= y < 10
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey replicated to RGB
    sample = as_batches(d.train_plain, limit=500)
    assert abs(sample.x.mean().item()) < 0.25 and 0.7 < sample.x.std().item() < 1.3  # normalised


def test_val_split_is_held_out_stratified_and_deterministic():
    labels = torch.arange(300) % 7
    keep, held = stratified_split(labels, 0.1, seed=3)
    assert set(keep.tolist()).isdisjoint(held.tolist())
    assert sorted(keep.tolist() + held.tolist()) == list(range(300))
    assert torch.bincount(labels[held]).tolist() == [4] * 7  # round(0.1 * 43 or 42) per class
    again, _ = stratified_split(labels, 0.1, seed=3)
    other, _ = stratified_split(labels, 0.1, seed=4)
    assert torch.equal(keep, again) and not torch.equal(keep, other)


def test_load_data_val_depends_on_seed_and_test_does_not():
    a, b, c = (load_data("digits", input_size=8, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.images, c.test.images)
    # Held out means held out: the 1,797 digits are all distinct, and no val or test image is trained on.
    train_rows = {tuple(r) for r in a.train.images.flatten(1).tolist()}
    for split in (a.val, a.test):
        assert not any(tuple(r) in train_rows for r in split.images.flatten(1).tolist())


def test_training_augmentation_is_seeded_and_plain_split_is_not_augmented(digits16):
    d = digits16
    first, _ = d.train[(7, 11)]
    assert torch.equal(first, d.train[(7, 11)][0])
    variants = {tuple(d.train[(7, s)][0].flatten().tolist()) for s in range(12)}
    assert len(variants) > 3
    assert torch.equal(d.train_plain[7][0], d.train_plain[7][0])
    assert d.train[(7, 0)][1] == d.train_plain[7][1]


def test_augmentations_keep_shape_and_stay_in_bounds():
    img = torch.rand(3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    crop = PadCropFlip(pad=2, flip=False)
    padded = torch.nn.functional.pad(img, (2, 2, 2, 2))
    shifts = [padded[:, top : top + 16, left : left + 16] for top in range(5) for left in range(5)]
    seen = set()
    for _ in range(200):
        out = crop(img, gen)
        seen.add(next(i for i, s in enumerate(shifts) if torch.equal(out, s)))  # a pure shift, no flip
    assert len(seen) > 20 and 12 in seen  # 12 = no shift
    rrc = ResizedCropFlip(12, scale=(0.08, 1.0))
    for _ in range(50):
        top, left, h, w = rrc.box(30, 40, gen)
        assert 0 <= top and top + h <= 30 and 0 <= left and left + w <= 40
    assert rrc(torch.rand(3, 30, 40), gen).shape == (3, 12, 12)


def test_as_batches_is_a_deterministic_sample(digits16):
    a = as_batches(digits16.val, limit=50, batch_size=16, seed=5)
    b = as_batches(digits16.val, limit=50, batch_size=16, seed=5)
    c = as_batches(digits16.val, limit=50, batch_size=16, seed=6)
    assert len(a) == 50 and torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert [len(y) for _, y in a] == [16, 16, 16, 2]
    whole = as_batches(digits16.val, limit=10**6)
    assert len(whole) == len(digits16.val)


# ---- CIFAR-10 -----------------------------------------------------------------------------------
def test_cifar10_python_batches_in_subfolder(tmp_path):
    written = _write_cifar_batches(tmp_path / "cifar-10-batches-py")
    d = load_data(f"cifar10:{tmp_path}", input_size=32, val_fraction=0.25)
    assert d.name == f"cifar10:{tmp_path.resolve()}" and d.num_classes == 10
    assert len(d.train) + len(d.val) == 20 and len(d.test) == 4
    x, _ = d.test[0]
    expected = torch.from_numpy(written["test_batch"][0].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(_denormalise(x, CIFAR10_NORM), expected, atol=1e-5)


def test_cifar10_npz_and_resize(tmp_path):
    _write_npz(tmp_path)
    d = load_data(f"cifar10:{tmp_path}", input_size=24)
    assert len(d.train) + len(d.val) == 40 and len(d.test) == 10
    assert d.train[(0, 1)][0].shape == (3, 24, 24) and d.val[0][0].shape == (3, 24, 24)


def test_cifar10_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    _write_cifar_batches(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "data_batch_3").write_bytes(b"not a pickle at all")
    _write_cifar_batches(tmp_path / "missing")
    (tmp_path / "missing" / "data_batch_3").unlink()
    _write_npz(tmp_path / "badzip")
    (tmp_path / "badzip" / "test.npz").write_bytes(b"PK\x03\x04garbage")
    _write_npz(tmp_path / "badshape")
    np.savez(tmp_path / "badshape" / "test.npz", x=np.zeros((3, 32, 32), np.uint8), y=np.zeros(3, np.int64))
    cases = [
        ("nowhere", "dataset directory .*nowhere does not exist"),
        ("empty", "empty holds neither CIFAR-10 python batches"),
        ("corrupt", "cannot read CIFAR-10 batch .*corrupt/data_batch_3"),
        ("missing", "missing/data_batch_3 is missing"),
        ("badzip", "cannot read .*badzip/test.npz"),
        ("badshape", r"badshape/test.npz: x must be uint8 \(N, H, W, C\)"),
    ]
    for folder, message in cases:
        with pytest.raises(DataError, match=message):
            load_data(f"cifar10:{tmp_path / folder}")


def test_unknown_specs_are_rejected():
    for spec in ("mnist", "cifar10", "imagefolder:", "digits:x"):
        with pytest.raises(DataError, match="unknown dataset spec"):
            load_data(spec)


# ---- ImageFolder --------------------------------------------------------------------------------
def test_imagefolder_train_and_test_trees(tmp_path):
    _write_tree(tmp_path / "train")
    _write_tree(tmp_path / "val", per_class=2)
    d = load_data(f"imagefolder:{tmp_path}", input_size=16, val_fraction=0.2)
    assert d.num_classes == 3 and len(d.test) == 6 and len(d.train) + len(d.val) == 18
    assert len(d.val) == 3  # one image per class
    assert d.train[(0, 3)][0].shape == (3, 16, 16) and d.test[5][0].shape == (3, 16, 16)
    assert d.test[5][1] == 2
    sample = as_batches(d.train_plain, limit=8, batch_size=4)
    assert sample.x.shape == (8, 3, 16, 16)


def test_imagefolder_single_tree_is_split(tmp_path):
    _write_tree(tmp_path, classes=("a", "b"), per_class=10)
    d = load_data(f"imagefolder:{tmp_path}", input_size=16)
    assert d.num_classes == 2 and len(d.test) == 4 and len(d.train) + len(d.val) == 16


def test_imagefolder_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        load_data(f"imagefolder:{tmp_path / 'empty'}")
    (tmp_path / "noimages" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="noimages/cls holds no images"):
        load_data(f"imagefolder:{tmp_path / 'noimages'}")
    _write_tree(tmp_path / "corrupt", classes=("a",), per_class=3)
    (tmp_path / "corrupt" / "a" / "1.png").write_bytes(b"\x89PNG truncated")
    d = load_data(f"imagefolder:{tmp_path / 'corrupt'}", input_size=16, val_fraction=0.3)
    with pytest.raises(DataError, match=r"cannot read image .*corrupt/a/1.png"):
        for i in range(len(d.train_plain)):
            d.train_plain[i]
        for i in range(len(d.val)):
            d.val[i]
        for i in range(len(d.test)):
            d.test[i]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="is not a directory"):
        load_data(f"imagefolder:{a_file}")


def test_relative_dirs_are_found_in_data_roots(tmp_path):
    _write_npz(tmp_path / "sets" / "tiny")
    d = load_data("cifar10:tiny", data_roots=[tmp_path / "sets"])
    assert d.name == f"cifar10:{(tmp_path / 'sets' / 'tiny').resolve()}"


def test_files_linked_from_outside_the_dataset_folder_are_refused(tmp_path):
    """A class folder or an image that is a link leading out of the dataset folder is never read:
    the API checks the folder is under a data root, so every file read must resolve inside it."""
    _write_tree(tmp_path / "outside", classes=("secret",), per_class=4)
    _write_tree(tmp_path / "data", classes=("a", "b"), per_class=4)
    (tmp_path / "data" / "c").symlink_to(tmp_path / "outside" / "secret", target_is_directory=True)
    with pytest.raises(DataError, match="c links outside"):
        load_data(f"imagefolder:{tmp_path / 'data'}", input_size=16)
    (tmp_path / "data" / "c").unlink()
    (tmp_path / "data" / "a" / "x.png").symlink_to(next((tmp_path / "outside" / "secret").iterdir()))
    with pytest.raises(DataError, match="x.png links outside"):
        load_data(f"imagefolder:{tmp_path / 'data'}", input_size=16)
    _write_npz(tmp_path / "outside" / "cifar")
    (tmp_path / "cifar").mkdir()
    for name in ("train.npz", "test.npz"):
        (tmp_path / "cifar" / name).symlink_to(tmp_path / "outside" / "cifar" / name)
    with pytest.raises(DataError, match="train.npz links outside"):
        load_data(f"cifar10:{tmp_path / 'cifar'}")
