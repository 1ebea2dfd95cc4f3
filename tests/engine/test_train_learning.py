"""The supernet really learns: nonuniform US-Net on the digits, scored on held-out images."""

from __future__ import annotations

from engine.data import as_batches
from engine.spec import TrainSpec
from engine.train import build_for_mode, train_supernet
from engine.width_scores import score_uniform


def test_nonuniform_supernet_learns_the_digits_at_full_and_smallest_width(digits16, tmp_path):
    net = build_for_mode("resnet18", "usnet-nonuniform", 10, input_size=16, width_mult=0.25)
    spec = TrainSpec(mode="usnet-nonuniform", epochs=4, batch_size=64, lr=0.1, warmup_epochs=1.0)
    train_supernet(net, digits16, spec, tmp_path)
    val = as_batches(digits16.val)
    calib = as_batches(digits16.train_plain, limit=1000)
    smallest, full = score_uniform(net, [0.25, 1.0], val, calib)
    assert smallest.macs < full.macs / 8
    # Chance is 10%; a supernet that had not learned, or a broken calibration, stays near it.
    assert full.score.accuracy > 70 and smallest.score.accuracy > 50, (full, smallest)
