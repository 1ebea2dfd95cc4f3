"""Shared-prefix scoring on graphs beyond a plain chain: chunks and shuffles (ShuffleNetV2),
squeeze-excitation gates (EfficientNet), grouped convs with gates (RegNetY), concatenations
(GoogLeNet).  Every candidate's score must equal the full recomputation bit for bit, which holds
only if the partial forward cuts each candidate where its channels are first mixed and narrows the
cached activations exactly as the analysis lays them out."""

from __future__ import annotations

import pytest
import torch

from engine.candidate_scoring import FullScorer, SharedPrefixScorer
from engine.data import as_batches
from engine.greedy import candidates
from models import build_supernet


@pytest.mark.parametrize("arch", ["shufflenet_v2_x0_5", "efficientnet_b0", "regnet_y_400mf", "googlenet"])
def test_shared_prefix_scores_equal_the_full_recomputation(arch, digits16):
    torch.manual_seed(0)
    net = build_supernet(f"torchvision:{arch}", 10, 32).eval()
    calib = as_batches(digits16.train_plain, 16, 16)
    score = as_batches(digits16.val, 16, 16)
    calib.x = torch.nn.functional.interpolate(calib.x, size=32)
    score.x = torch.nn.functional.interpolate(score.x, size=32)
    parent = net.space.random(torch.Generator().manual_seed(1))
    options = candidates(net.space, parent, 4)
    shared = SharedPrefixScorer(net, calib, score).score(parent, options)
    full = FullScorer(net, calib, score).score(parent, options)
    assert shared == full
    assert len({s.loss for s in full.values()}) > 1
