"""Slim export: the plain model computes exactly what the supernet computes at that configuration.

BN statistics and affine parameters are randomised first: with fresh BN (mean 0, var 1, weight 1,
bias 0) a wrong slice of the statistics would not change a single logit.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

import models
from models.files import save_model
from models.ops import SLIM_LEAVES

ATOL = 1e-5
PLAIN_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def assert_export_matches(supernet: models.Supernet, widths: dict[str, int], x: torch.Tensor) -> nn.Module:
    """Supernet (eval) at ``widths`` vs its export: equal logits, only plain layers in the export."""
    supernet.eval().set_widths(widths)
    slim = models.export_slim(supernet, widths)
    assert not slim.training
    assert not any(isinstance(m, SLIM_LEAVES) for m in slim.modules())
    assert all(type(m) in PLAIN_TYPES for m in slim.modules() if isinstance(m, PLAIN_TYPES))
    with torch.no_grad():
        expected, got = supernet(x), slim(x)
    assert got.shape == (x.shape[0], supernet.spec.num_classes)
    assert expected.abs().max() > 10 * ATOL  # not a trivially tiny output
    assert max_diff(expected, got) <= ATOL, widths
    return slim


@pytest.mark.parametrize("arch", models.list_archs())
def test_supernet_equals_export_on_random_configs(arch, randomise_bn):
    generator = torch.Generator().manual_seed(0)
    supernet = randomise_bn(models.build_supernet(arch, num_classes=10, input_size=32, width_mult=0.5), generator)
    x = torch.randn(4, 3, 32, 32, generator=generator)
    space = supernet.space
    configs = [space.full(), space.smallest()] + [space.random(generator) for _ in range(5)]
    for widths in configs:
        assert_export_matches(supernet, widths, x)
    # Exporting copies: the supernet keeps its widths and its parameters are not shared.
    assert supernet.widths == configs[-1]
    slim = models.export_slim(supernet)
    shared = {p.data_ptr() for p in supernet.parameters()} & {p.data_ptr() for p in slim.parameters()}
    assert not shared


@pytest.mark.parametrize("arch", models.list_archs())
def test_supernet_equals_export_with_imagenet_stem(arch, randomise_bn):
    generator = torch.Generator().manual_seed(1)
    supernet = models.build_supernet(arch, num_classes=1000, input_size=224, width_mult=0.25)
    randomise_bn(supernet, generator)
    assert_export_matches(supernet, supernet.space.random(generator), torch.randn(2, 3, 224, 224, generator=generator))


@pytest.mark.parametrize("arch", models.list_archs())
def test_switchable_bn_supernet_equals_export_at_every_switch(arch, randomise_bn):
    generator = torch.Generator().manual_seed(2)
    supernet = models.build_supernet(arch, num_classes=10, input_size=32, width_mult=0.5, switches=(0.25, 0.5, 0.75))
    randomise_bn(supernet, generator)
    x = torch.randn(4, 3, 32, 32, generator=generator)
    logits = []
    for ratio in (0.25, 0.5, 0.75, 1.0):
        slim = assert_export_matches(supernet, supernet.space.uniform(ratio), x)
        logits.append(slim(x).detach())
    assert all(max_diff(a, b) > 1e-3 for a, b in zip(logits, logits[1:]))  # each switch is its own network


def test_switchable_bn_rejects_a_width_that_is_not_a_switch():
    supernet = models.build_supernet("mobilenet_v2", width_mult=0.5, switches=(0.5,)).eval()
    widths = supernet.space.full()
    widest = max(supernet.space.groups.values(), key=lambda g: g.max)
    widths[widest.name] = widest.max - widest.divisor  # between the 0.5x and 1.0x switches
    supernet.set_widths(widths)
    with pytest.raises(ValueError, match="no switch for"):
        supernet(torch.zeros(1, 3, 32, 32))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")  # jit / legacy ONNX exporter
@pytest.mark.parametrize("arch", models.list_archs())
def test_saved_slim_model_files_agree(arch, randomise_bn, tmp_path):
    """.onnx in onnxruntime (with a batch size other than the traced one), .ts and .pt reloaded."""
    generator = torch.Generator().manual_seed(3)
    supernet = randomise_bn(models.build_supernet(arch, num_classes=10, input_size=32, width_mult=0.25), generator)
    slim = models.export_slim(supernet, supernet.space.random(generator))
    x = torch.randn(3, 3, 32, 32, generator=generator)
    with torch.no_grad():
        expected = slim(x).numpy()

    onnx_path = save_model(slim, tmp_path / "m.onnx", 32)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["logits"], {"input": x.numpy()})[0], expected, atol=1e-4, rtol=0)
    scripted = torch.jit.load(str(save_model(slim, tmp_path / "m.ts", 32)))
    reloaded = torch.load(save_model(slim, tmp_path / "m.pt", 32), weights_only=False)
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), expected, atol=ATOL, rtol=0)
        np.testing.assert_allclose(reloaded(x).numpy(), expected, atol=ATOL, rtol=0)
    assert not any(isinstance(m, SLIM_LEAVES) for m in reloaded.modules())


def test_save_model_rejects_an_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match="unknown model format '.h5'"):
        save_model(nn.Linear(2, 2), tmp_path / "m.h5", 32)
