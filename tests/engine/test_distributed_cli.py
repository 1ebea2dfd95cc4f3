"""``autoslim search --nproc 2`` from the command line: the command starts two gloo ranks on the CPU
(spawned by torch's elastic launcher, as ``--nproc`` always starts them), they train the supernet
data-parallel and search to the end, and one process searching that supernet finds the same
trajectory and the same answer; so does the README's multi-node command, ``torchrun ... -m app.cli
search``, run here as one node of two ranks.  (The supernet itself is compared with one process's
in float64 in test_distributed.py; in float32 the two trainings round differently, so the comparison
here is of the search on one trained supernet.)  Every process computes with the same number of
threads (torchrun would give each rank one: here it is told the machine's count, as ``--nproc`` and
one process take it), since a sum split over another number of threads rounds differently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from app.cli import main
from engine.device import compute_threads

FLAGS = [
    "--arch",
    "resnet18",
    "--dataset",
    "digits",
    "--width-mult",
    "0.25",
    "--input-size",
    "8",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--bins",
    "4",
    "--calib-size",
    "64",
    "--score-size",
    "64",
    "--macs",
    "1.95M",
    "--device",
    "cpu",
]
"""ResNet-18 x0.25 at the digits' own 8 px (2.19M MACs): a search of a few seconds once the ranks run."""


def test_search_on_two_ranks_runs_to_the_end_with_the_one_process_answer(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("AUTOSLIM_SUPERNET_CACHE", str(tmp_path / "supernets"))  # trained here, by the ranks
    monkeypatch.setenv("AUTOSLIM_LATENCY_CACHE", str(tmp_path / "latency"))
    assert main(["search", *FLAGS, "--out", str(tmp_path / "two"), "--nproc", "2"]) == 0
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    assert two["ranks"] == 2 and two["supernet"]["reused"] is False
    printed = capfd.readouterr().out
    assert printed.count("full network") == 1  # rank 0 alone prints the table
    assert main(["search", *FLAGS, "--out", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    assert one["ranks"] == 1 and one["supernet"]["reused"] is True and one["supernet"]["key"] == two["supernet"]["key"]
    assert len(two["trajectory"]) > 2 and one["trajectory"] == two["trajectory"]
    assert one["budgets"] == two["budgets"] and two["budgets"][0]["macs"] <= 1.95e6
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "app.cli",
        "search",
        *FLAGS,
        "--out",
        str(tmp_path / "torchrun"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(compute_threads())}
    run = subprocess.run(torchrun, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    under_torchrun = json.loads((tmp_path / "torchrun" / "result.json").read_text())
    assert under_torchrun["ranks"] == 2 and under_torchrun["supernet"]["reused"] is True
    assert under_torchrun["trajectory"] == two["trajectory"] and under_torchrun["budgets"] == two["budgets"]
