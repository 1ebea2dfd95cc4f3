"""One search over two ranks (gloo on the CPU, started by torch's elastic launcher): the training
equals one process with the same global batch, the greedy trajectory is the one-process one, and a
rank that dies fails the attempt cleanly and leaves a checkpoint that a later run resumes from.

Tolerance: summing gradients and BN statistics over ranks reorders float32 sums, so weights agree
to rounding (``ATOL``), not bit for bit; the greedy scores are computed per candidate exactly as in
one process, so its trajectory must be identical.  The ranks are forked (``start_method="fork"``:
no second import of torch per rank); the service spawns them, which differs only in how a rank's
process starts.
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from engine.calibrate import Batches
from engine.data import DataSplits, as_batches, load_data
from engine.distributed import Ranks, init_from_env, launch, shutdown
from engine.greedy import GreedySlimmer
from engine.spec import TrainSpec
from engine.train import build_for_mode, load_supernet, train_supernet

SPEC = TrainSpec(mode="usnet-nonuniform", epochs=2, batch_size=32, lr=0.05, warmup_epochs=1.0)
IMAGES = 128  # 4 steps of 32 per epoch, split 16 + 16 over two ranks
ATOL = 1e-5
KILL_AT_STEP = 6  # in the second epoch: epoch 1's checkpoint is on disk


def _tiny(digits: DataSplits) -> DataSplits:
    keep = torch.arange(IMAGES)
    return replace(digits, train=digits.train.subset(keep, digits.train.augment),
                   train_plain=digits.train_plain.subset(keep, None))


def _net(mode: str = "usnet-nonuniform"):
    return build_for_mode("resnet18", mode, num_classes=10, input_size=16, width_mult=0.25)


def _samples(digits: DataSplits) -> tuple[Batches, Batches]:
    return as_batches(digits.train_plain, 64, 32), as_batches(digits.val, 64, 32)


def _search(path: Path, digits: DataSplits, ranks: Ranks | None = None) -> list[dict]:
    net = load_supernet(path)
    calib, score = _samples(digits)
    slimmer = GreedySlimmer(net, calib, score, bins=4, ranks=ranks)
    return [s.to_dict() for s in slimmer.run(done=lambda steps: len(steps) > 4)]


def _rank_job(out: str) -> dict:
    """One rank: train both modes data-parallel, then search the trained supernet."""
    torch.set_num_threads(1)
    ranks = init_from_env("cpu")
    try:
        digits = load_data("digits", input_size=16)
        finals = {mode: str(train_supernet(_net(mode), _tiny(digits), replace(SPEC, mode=mode), Path(out) / mode,
                                           device="cpu", ranks=ranks)) for mode in ("usnet-nonuniform", "snet")}
        return {"rank": ranks.rank, "world": ranks.world, "finals": finals,
                "trajectory": _search(Path(finals["usnet-nonuniform"]), digits, ranks)}
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

    train_supernet(_net(), _tiny(load_data("digits", input_size=16)), SPEC, Path(out), device="cpu",
                   should_cancel=check, ranks=ranks)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict[int, dict]:
    return launch(2, _rank_job, [str(tmp_path_factory.mktemp("two-ranks"))], start_method="fork")


@pytest.fixture(scope="module")
def one_process(digits16, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("one-process")
    return {mode: train_supernet(_net(mode), _tiny(digits16), replace(SPEC, mode=mode), out / mode, device="cpu")
            for mode in ("usnet-nonuniform", "snet")}


def _max_difference(a: Path, b: Path) -> float:
    sa, sb = torch.load(a, weights_only=False)["model"], torch.load(b, weights_only=False)["model"]
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


@pytest.mark.parametrize("mode", ["usnet-nonuniform", "snet"])
def test_two_ranks_train_the_weights_of_one_process_with_the_whole_batch(two_ranks, one_process, mode):
    assert sorted(r["rank"] for r in two_ranks.values()) == [0, 1] and two_ranks[0]["world"] == 2
    two = Path(two_ranks[0]["finals"][mode])
    difference = _max_difference(two, one_process[mode])
    assert difference < ATOL, f"{mode}: weights differ by {difference}"
    # and the comparison has teeth: training moved the weights far more than the tolerance
    assert _max_difference(two, _initial(mode, two.parent)) > 1000 * ATOL


def _initial(mode: str, folder: Path) -> Path:
    path = folder / "initial.pt"
    torch.save({"model": _net(mode).state_dict()}, path)
    return path


def test_two_rank_greedy_gives_exactly_the_one_process_trajectory(two_ranks, digits16):
    final = Path(two_ranks[0]["finals"]["usnet-nonuniform"])
    alone = _search(final, digits16)
    assert len(alone) == 5 and len({s["removed"] for s in alone[1:]}) > 1
    assert two_ranks[0]["trajectory"] == alone
    assert two_ranks[1]["trajectory"] == alone


def test_a_dead_rank_fails_the_run_and_the_checkpoint_resumes_on_one_process(one_process, digits16, tmp_path):
    with pytest.raises(ChildFailedError) as failed:
        launch(2, _dying_job, [str(tmp_path)], start_method="fork")
    assert 1 in failed.value.failures and failed.value.failures[1].exitcode == -signal.SIGKILL
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert (state["step"], state["finished"]) == (4, False) and not (tmp_path / "final.pt").exists()
    final = train_supernet(_net(), _tiny(digits16), SPEC, tmp_path, device="cpu")  # resumed with one rank
    assert _max_difference(final, one_process["usnet-nonuniform"]) < ATOL
