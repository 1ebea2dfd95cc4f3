"""Exact MAC and parameter counting: published ImageNet figures, and two independent counts.

The analytic count (``models.count_macs`` / ``count_params``) reads only the traced layer records;
here it is checked against (a) forward hooks on the exported plain model and ``numel`` of its
parameters, and (b) fvcore's FlopCountAnalysis (which calls one multiply-accumulate one "flop"),
for 20 random nonuniform configurations per architecture plus the full and smallest ones.
"""

from __future__ import annotations

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

import models

# Published ImageNet figures (1.0x, 224 px, 1000 classes): MACs, params.
PUBLISHED = {
    "mobilenet_v1": (569e6, 4.2e6),  # Howard et al. 2017, Table 8
    "mobilenet_v2": (300e6, 3.5e6),  # Sandler et al. 2018, Table 4
    "resnet18": (1.82e9, 11.7e6),  # He et al. 2016, Table 1; torchvision
    "resnet50": (4.1e9, 25.6e6),  # He et al. 2016, Table 1; torchvision
}
RANDOM_CONFIGS = 20


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_published_imagenet_figures_within_one_percent(arch):
    supernet = models.build_supernet(arch, num_classes=1000, input_size=224, width_mult=1.0)
    macs = models.count_macs(supernet.space, supernet.space.full())
    params = models.count_params(supernet.space, supernet.space.full())
    published_macs, published_params = PUBLISHED[arch]
    assert macs == pytest.approx(published_macs, rel=0.01)
    assert params == pytest.approx(published_params, rel=0.01)


def hook_macs(model: nn.Module, input_size: int) -> int:
    """MACs of one image, counted from the shapes each Conv2d / Linear actually sees."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += kh * kw * (m.in_channels // m.groups) * m.out_channels * out.shape[-2] * out.shape[-1]

    def linear_hook(m: nn.Linear, _inp, _out) -> None:
        nonlocal total
        total += m.in_features * m.out_features

    handles = [
        m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    for h in handles:
        h.remove()
    return total


def fvcore_macs(model: nn.Module, input_size: int) -> int:
    """fvcore's count restricted to convolutions and linear layers (what the papers count)."""
    analysis = FlopCountAnalysis(model, torch.zeros(1, 3, input_size, input_size))
    by_op = analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).by_operator()
    return sum(by_op.get(op, 0) for op in ("conv", "linear", "addmm"))


def configurations(supernet: models.Supernet, seed: int, n: int) -> list[dict[str, int]]:
    generator = torch.Generator().manual_seed(seed)
    space = supernet.space
    return [space.full(), space.smallest()] + [space.random(generator) for _ in range(n)]


@pytest.mark.parametrize("arch", models.list_archs())
def test_analytic_count_equals_hooks_and_fvcore_on_random_configs(arch):
    supernet = models.build_supernet(arch, num_classes=10, input_size=32, width_mult=0.5)
    seen = set()
    for widths in configurations(supernet, seed=0, n=RANDOM_CONFIGS):
        slim = models.export_slim(supernet, widths)
        macs = models.count_macs(supernet.space, widths)
        assert hook_macs(slim, 32) == macs, widths
        assert fvcore_macs(slim, 32) == macs, widths
        assert sum(p.numel() for p in slim.parameters()) == models.count_params(supernet.space, widths), widths
        seen.add(macs)
    assert len(seen) > RANDOM_CONFIGS // 2, "random configurations should differ in cost"


@pytest.mark.parametrize("arch", models.list_archs())
def test_analytic_count_with_imagenet_stem(arch):
    """The 224 px stem (stride 2, max-pool) changes every resolution; hooks must still agree."""
    supernet = models.build_supernet(arch, num_classes=1000, input_size=224, width_mult=0.25)
    for widths in configurations(supernet, seed=1, n=2):
        slim = models.export_slim(supernet, widths)
        assert hook_macs(slim, 224) == models.count_macs(supernet.space, widths)
        assert sum(p.numel() for p in slim.parameters()) == models.count_params(supernet.space, widths)


@pytest.mark.parametrize("arch", models.list_archs())
def test_cost_shrinks_with_width(arch):
    supernet = models.build_supernet(arch, num_classes=10, input_size=32, width_mult=0.5)
    space = supernet.space
    costs = [models.count_macs(space, space.uniform(r)) for r in (1.0, 0.75, 0.5, 0.25)]
    assert costs == sorted(costs, reverse=True) and len(set(costs)) == len(costs)
    assert models.count_macs(space, space.smallest()) <= costs[-1]
