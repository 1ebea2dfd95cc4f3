"""``--weights`` on ``autoslim train`` and ``autoslim search``: the pretrained recipe, and one-line errors."""

from __future__ import annotations

import torch

import models
from app.cli import main
from engine.checkpoint import load_checkpoint
from engine.spec import PRETRAINED_TRAIN

NET = ["--arch", "resnet18", "--dataset", "digits", "--width-mult", "0.25", "--input-size", "16"]


def resnet_weights(tmp_path, num_classes: int = 10) -> str:
    model = models.build("resnet18", num_classes=num_classes, input_size=16, width_mult=0.25)
    path = tmp_path / f"resnet18-{num_classes}.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def test_train_from_weights_uses_the_pretrained_recipe_and_says_so(tmp_path, capsys):
    weights = resnet_weights(tmp_path, num_classes=4)
    assert (
        main(
            [
                "train",
                *NET,
                "--batch-size",
                "256",
                "--calib-size",
                "64",
                "--weights",
                weights,
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"started from {weights}; head fc replaced (fresh initialisation)" in out
    assert "the weights are for 4 classes, this dataset has 10" in out
    train = load_checkpoint(tmp_path / "run" / "final.pt")["train"]
    assert (train["epochs"], train["lr"], train["warmup_epochs"]) == (1, PRETRAINED_TRAIN["lr"], 0.0)
    assert main(["train", "--out", str(tmp_path / "run"), "--resume"]) == 0  # the stored warm-up, not the default
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--weights", weights]) == 2
    assert "--weights starts a new run" in capsys.readouterr().err


def test_weights_of_another_network_are_one_line_naming_the_key_before_any_training(tmp_path, capsys):
    weights = tmp_path / "wide.pt"
    torch.save(models.build("resnet18", num_classes=10, input_size=16, width_mult=0.5).state_dict(), weights)
    for command in (["train", *NET], ["search", *NET, "--macs", "1M"]):
        assert main([*command, "--weights", str(weights), "--out", str(tmp_path / command[0])]) == 2
        err = capsys.readouterr().err
        assert err.splitlines()[-1] == (
            f"autoslim {command[0]}: error: conv1.weight has shape [32, 3, 3, 3] in "
            "the weights but [16, 3, 3, 3] in the network"
        ), err
        assert "Traceback" not in err
    assert not (tmp_path / "search" / "result.json").exists()
