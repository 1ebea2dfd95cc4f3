"""One search over two ranks (gloo on the CPU, started by torch's elastic launcher): the training
equals one process with the same global batch, the greedy trajectory is the one-process one, and a
rank that dies fails the attempt cleanly and leaves a checkpoint that a later run resumes from.

Tolerance: the trainings run in float64.  Summing gradients and BN statistics over ranks only
reorders additions, but in float32 these tiny supernets turn a reordering into visible weight
differences within a few steps: one process trained on the same batches with each batch's images
in another order ends up 1e-2 away (ResNet-18 x0.25 at 16 px, 4 steps of 32 digits at lr 0.05), so
float32 cannot tell a correct data-parallel run from a subtly wrong one.  In float64 the same
reordering moves the weights by ~4e-15 and 2 ranks differ from 1 process by ~9e-15, so ``ATOL`` =
1e-9 leaves room for rounding and none for a real difference: with this test's settings, BN
statistics of each rank's shard instead of the whole batch give 0.31, losses not scaled by the
rank's share 0.66, gradients not summed 0.39.  The greedy scores are computed per
candidate exactly as in one process, so its trajectory must be identical.  The ranks are spawned,
as the service starts them: forked ranks hang in their first convolution when the test process
has already run OpenMP work (any earlier test in the same process does).
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
import torch
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from engine.data import DataSplits, as_batches, load_data
from engine.data.batches import Batches
from engine.data.images import ImageTensors
from engine.distributed import Ranks, init_from_env, launch, shutdown
from engine.greedy import GreedySlimmer
from engine.spec import TrainSpec
from engine.train import build_for_mode, load_supernet, train_supernet
from models import Supernet

SIZE = 8  # px: ResNet-18's CIFAR stem runs 8, 4, 2, 1 px, so every block, downsample branches included, trains
SPEC = TrainSpec(mode="usnet-nonuniform", epochs=2, batch_size=16, lr=0.05, warmup_epochs=1.0, num_sandwich=3)
IMAGES = 32  # 2 steps of 16 per epoch, split 8 + 8 over two ranks
ATOL = 1e-9
MODES = ("usnet-nonuniform", "snet")  # shared BN (channel prefixes and gathered rows) and switchable BN
GREEDY_STEPS = 3
KILL_AT_STEP = 3  # in the second epoch: epoch 1's checkpoint (step 2) is on disk


@cache
def _digits() -> DataSplits:
    return load_data("digits", input_size=SIZE)


def _before_forking() -> None:
    """Load the digits and build a supernet in this process first: the ranks' results are compared
    with this process's, and a failure to build shows here rather than inside a rank."""
    _digits()
    _net()


def _float64(digits: DataSplits) -> DataSplits:
    """The first `IMAGES` training images, held (and so augmented and normalised) in float64."""
    train = digits.train
    images = train.images[:IMAGES]
    images = images.double() / 255 if images.dtype == torch.uint8 else images.double()
    mean, std = tuple(train.mean.flatten().tolist()), tuple(train.std.flatten().tolist())
    return replace(
        digits,
        train=ImageTensors(images, train.labels[:IMAGES], mean, std, train.augment),
        train_plain=ImageTensors(images, train.labels[:IMAGES], mean, std),
    )


def _net(mode: str = "usnet-nonuniform") -> Supernet:
    return build_for_mode("resnet18", mode, num_classes=10, input_size=SIZE, width_mult=0.25).double()


def _train(mode: str, out: Path, **kwargs) -> Path:
    return train_supernet(_net(mode), _float64(_digits()), replace(SPEC, mode=mode), out, device="cpu", **kwargs)


def _samples(digits: DataSplits) -> tuple[Batches, Batches]:
    return as_batches(digits.train_plain, 48, 48), as_batches(digits.val, 48, 48)


def _search(path: Path, digits: DataSplits, ranks: Ranks | None = None) -> list[dict]:
    net = load_supernet(path)
    calib, score = _samples(digits)
    slimmer = GreedySlimmer(net, calib, score, bins=4, ranks=ranks)
    return [s.to_dict() for s in slimmer.run(done=lambda steps: len(steps) > GREEDY_STEPS)]


def _rank_job(out: str) -> dict:
    """One rank: train every mode data-parallel, then search the trained shared-BN supernet."""
    torch.set_num_threads(1)
    ranks = init_from_env("cpu")
    try:
        finals = {mode: str(_train(mode, Path(out) / mode, ranks=ranks)) for mode in MODES}
        return {
            "rank": ranks.rank,
            "world": ranks.world,
            "finals": finals,
            "trajectory": _search(Path(finals["usnet-nonuniform"]), _digits(), ranks),
        }
    finally:
        shutdown()


def _dying_job(out: str) -> None:
    """Rank 1 is killed (SIGKILL: no clean-up of any kind) in the middle of the second epoch."""
    torch.set_num_threads(1)
    ranks = init_from_env("cpu")
    steps = iter(range(1, 10**6))

    def check() -> bool:
        if ranks.rank == 1 and next(steps) == KILL_AT_STEP:
            os.kill(os.getpid(), signal.SIGKILL)
        return False

    _train(SPEC.mode, Path(out), should_cancel=check, ranks=ranks)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict[int, dict]:
    _before_forking()
    return launch(2, _rank_job, [str(tmp_path_factory.mktemp("two-ranks"))], start_method="spawn")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("one-process")
    return {mode: _train(mode, out / mode) for mode in MODES}


def _max_difference(a: Path, b: Path) -> float:
    sa, sb = torch.load(a, weights_only=False)["model"], torch.load(b, weights_only=False)["model"]
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


@pytest.mark.parametrize("mode", MODES)
def test_two_ranks_train_the_weights_of_one_process_with_the_whole_batch(two_ranks, one_process, mode):
    assert sorted(r["rank"] for r in two_ranks.values()) == [0, 1] and two_ranks[0]["world"] == 2
    two = Path(two_ranks[0]["finals"][mode])
    difference = _max_difference(two, one_process[mode])
    assert difference < ATOL, f"{mode}: weights differ by {difference}"
    # and the comparison has teeth: training moved the weights far more than the tolerance
    assert _max_difference(two, _initial(mode, two.parent)) > 1e6 * ATOL


def _initial(mode: str, folder: Path) -> Path:
    path = folder / "initial.pt"
    torch.save({"model": _net(mode).state_dict()}, path)
    return path


def test_two_rank_greedy_gives_exactly_the_one_process_trajectory(two_ranks):
    final = Path(two_ranks[0]["finals"]["usnet-nonuniform"])
    alone = _search(final, _digits())
    assert len(alone) == GREEDY_STEPS + 1 and len({s["removed"] for s in alone[1:]}) > 1
    assert two_ranks[0]["trajectory"] == alone
    assert two_ranks[1]["trajectory"] == alone


def test_a_dead_rank_fails_the_run_and_the_checkpoint_resumes_on_one_process(one_process, tmp_path):
    _before_forking()
    with pytest.raises(ChildFailedError) as failed:
        launch(2, _dying_job, [str(tmp_path)], start_method="spawn")
    assert _names_the_dead_rank(failed.value.failures)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert (state["step"], state["finished"]) == (2, False) and not (tmp_path / "final.pt").exists()
    final = _train(SPEC.mode, tmp_path)  # resumed with one rank
    assert _max_difference(final, one_process["usnet-nonuniform"]) < ATOL


def _names_the_dead_rank(failures: dict) -> bool:
    """The failure the launcher reports first: rank 1's SIGKILL, or rank 0 losing its peer in a
    collective (whichever process the launcher's monitor sees end first)."""
    if 1 in failures:
        return failures[1].exitcode == -signal.SIGKILL
    return "Connection" in failures[0].message and "peer" in failures[0].message
