"""Fixtures of the model-library tests.

Tests are parametrised over ``models.list_archs()`` (as timm's are over its registry), so a newly
registered architecture is counted, exported and checked without new test code.  Networks are kept
tiny (32 px, width multiplier 0.5 or less) so the whole folder runs in about a minute on 2 cores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import models


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run each test on one intra-op thread, restoring torch's setting afterwards.

    These networks are tiny (batch <= 4), so a second thread gains nothing; and when the two cores
    are shared with another busy process, OpenMP's spinning barriers made a forward pass 100x
    slower (9 ms on 1 thread, 0.9-2 s on 2, measured on the 2-core CI box under load).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise_bn(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Give every BN (shared, switchable or plain) random statistics and affine parameters.

    Fresh BN has mean 0, var 1, weight 1, bias 0: slicing mistakes in the statistics would go
    unnoticed.  Random values make every channel of every BN matter to the logits.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.5, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.normal_(0.0, 0.2, generator=generator)
    return model


@pytest.fixture
def randomise_bn() -> Callable[[nn.Module, torch.Generator], nn.Module]:
    return _randomise_bn


@pytest.fixture
def tiny_config(tmp_path) -> Callable[..., tuple[models.ChannelConfig, Path]]:
    """A saved channel config of a tiny supernet at a random configuration: ``(config, path)``."""

    def make(arch: str = "resnet18", seed: int = 0, **net_kwargs):
        kwargs = {"num_classes": 10, "input_size": 32, "width_mult": 0.25, **net_kwargs}
        supernet = models.build_supernet(arch, **kwargs)
        widths = supernet.space.random(torch.Generator().manual_seed(seed))
        config = models.ChannelConfig.from_widths(supernet, widths, accuracy=50.0)
        return config, config.save(tmp_path / f"{arch}-{seed}.json")

    return make
