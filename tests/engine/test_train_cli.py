"""``autoslim train``: trains without a server, refuses to clobber a run, resumes one."""

from __future__ import annotations

import torch

from app.cli import main
from engine.checkpoint import load_checkpoint
from engine.data import load_data
from engine.spec import Cancelled, TrainSpec
from engine.train import build_for_mode, train_supernet

ARGS = [
    "--arch",
    "resnet18",
    "--dataset",
    "digits",
    "--width-mult",
    "0.25",
    "--input-size",
    "16",
    "--epochs",
    "1",
    "--batch-size",
    "128",
    "--calib-size",
    "300",
]


def test_train_prints_accuracies_and_refuses_to_overwrite(tmp_path, capsys):
    assert main(["train", *ARGS, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'final.pt'}" in out and "held-out accuracy (143 validation images, BN calibrated)" in out
    assert [line.split()[1] for line in out.splitlines() if line.strip().startswith("width")] == [
        "0.25x",
        "0.50x",
        "0.75x",
        "1.00x",
    ]
    assert main(["train", *ARGS, "--out", str(tmp_path)]) == 2
    assert "already holds a training run; pass --resume" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path), "--resume", "--lr", "0.5"]) == 2
    assert "--lr 0.5 differs from the stored run's 0.1" in capsys.readouterr().err


def test_resume_continues_an_interrupted_run(tmp_path, capsys):
    # The run `autoslim train ... --mode snet` starts, stopped after 3 of its 10 steps.
    data = load_data("digits", input_size=16)
    net = build_for_mode("resnet18", "snet", 10, 16, 0.25)
    spec = TrainSpec(mode="snet", epochs=1, batch_size=128)
    steps = iter(range(100))
    try:
        train_supernet(net, data, spec, tmp_path / "run", should_cancel=lambda: next(steps) >= 2)
    except Cancelled:
        pass
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 3
    assert main(["train", "--out", str(tmp_path / "run"), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "held-out accuracy (143 validation images):" in out  # S-Net: private BN, no calibration
    assert [line.split()[1] for line in out.splitlines() if line.strip().startswith("width")] == [
        "0.25x",
        "0.50x",
        "0.75x",
        "1.00x",
    ]
    final = load_checkpoint(tmp_path / "run" / "final.pt")
    assert (final["step"], final["finished"]) == (10, True)
    assert main(["train", *ARGS, "--mode", "snet", "--out", str(tmp_path / "straight")]) == 0
    straight = load_checkpoint(tmp_path / "straight" / "final.pt")["model"]
    assert all(torch.allclose(straight[k].float(), final["model"][k].float(), atol=1e-5) for k in straight)


def test_bad_input_is_one_line(tmp_path, capsys):
    cases = [
        (["--arch", "nonet", "--dataset", "digits"], "unknown architecture 'nonet'"),
        (["--arch", "resnet18", "--dataset", f"cifar10:{tmp_path / 'none'}"], "does not exist"),
        (["--dataset", "digits"], "missing --arch"),
    ]
    for extra, message in cases:
        assert main(["train", *extra, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["train", "--out", str(tmp_path / "y"), "--resume"]) == 2
    assert "holds no run to resume" in capsys.readouterr().err
