"""A network the user writes (a concatenation and a squeeze-excitation gate), installed as a module
on the worker and named ``MODULE:FUNCTION``, searched on the digits end to end."""

from __future__ import annotations

import textwrap

import pytest
import torch

import models
from engine import run_search
from engine.data import as_batches, load_data
from engine.spec import CacheFolders

USER_MODULE = textwrap.dedent("""
    import torch
    import torch.nn.functional as F
    from torch import nn


    def conv_bn(cin, cout, kernel=3):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU())


    class ConcatSENet(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.stem = conv_bn(3, 16)
            self.left, self.right = conv_bn(16, 24, 1), conv_bn(16, 16)
            self.mix = conv_bn(40, 32, 1)
            self.squeeze, self.excite = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
            self.body = conv_bn(32, 32)
            self.head = nn.Linear(32, num_classes)

        def forward(self, x):
            x = self.stem(x)
            x = self.mix(torch.cat([self.left(x), self.right(x)], dim=1))
            gate = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
            x = x + self.body(x * gate)
            return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


    def concat_se_net(num_classes=10):
        return ConcatSENet(num_classes)
""")
ARCH = "user_nets:concat_se_net"


@pytest.fixture
def installed(tmp_path, monkeypatch):
    (tmp_path / "user_nets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    models.allow_modules(["user_nets"])
    yield
    models.allow_modules([])


def test_a_module_must_be_on_the_allow_list(tmp_path, monkeypatch):
    (tmp_path / "user_nets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyError, match="not on the allow-list.*AUTOSLIM_MODEL_MODULES"):
        models.check_arch(ARCH)


def test_user_network_is_searched_on_digits_to_its_budget(installed, tmp_path):
    full = models.build_supernet(ARCH, num_classes=10, input_size=16)
    full_macs = models.count_macs(full.space, full.space.full())
    target = round(0.6 * full_macs)
    spec = {
        "arch": ARCH,
        "dataset": "digits",
        "input_size": 16,
        "macs": [target],
        # Five epochs from scratch: inplace distillation from a barely trained teacher would hold
        # this small network at ~40% (measured), so the students learn from the labels.
        "train": {"epochs": 5, "batch_size": 32, "lr": 0.1, "inplace_distill": False},
        "search": {"bins": 4, "calib_size": 128, "score_size": 200, "calib_batch_size": 64},
    }
    result = run_search(spec, tmp_path / "job", caches=CacheFolders(tmp_path / "supernets", tmp_path / "latency"))
    answer = result["budgets"][0]
    assert result["trajectory"][0]["macs"] == full_macs and answer["macs"] <= target
    config = models.ChannelConfig.load(tmp_path / "job" / answer["files"]["config"])
    assert config.arch == ARCH and config.macs == answer["macs"]
    assert models.count_macs(full.space, full.space.from_layers(config.channels)) == answer["macs"]
    # The downloaded model is the user's own forward on slim layers; it scores what the search reported.
    slim = torch.load(tmp_path / "job" / answer["files"]["pt"], weights_only=False).eval()
    data = load_data("digits", 16, 0.1, 0)  # the split run_search holds out (default val_fraction, seed 0)
    score = as_batches(data.val, 200, 64, 0, "cpu")
    with torch.no_grad():
        correct = sum(int((slim(x).argmax(1) == y).sum()) for x, y in score)
    assert 100.0 * correct / len(score) == pytest.approx(answer["val_accuracy"])
    assert result["trajectory"][0]["val_accuracy"] > 80.0 and answer["val_accuracy"] > 50.0  # chance: 10%
