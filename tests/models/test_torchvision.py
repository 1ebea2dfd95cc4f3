"""torchvision's classification CNNs, converted by name: published figures, equality, exact counts.

Every torchvision network built from conv/BN/linear layers is analysed at its published input size
with parameters on the meta device (shapes without memory), and its MACs and parameters compared
with torchvision's published ``_ops`` and ``num_params``.  One network per family is then converted
for real at a small input size: the full width computes exactly what the original does, and at
random configurations the exported slim model computes what the supernet does, with the MACs an
independent counter (fvcore, over the exported model) finds.
"""

from __future__ import annotations

import functools

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn
from torchvision import models as tv

import models
from models import zoo

LISTED = zoo.torchvision_cnns()

FAMILIES = {  # one per family, with an input size at which it runs (Inception needs 75 px)
    "resnet18": 32,
    "resnext50_32x4d": 32,
    "wide_resnet50_2": 32,
    "mobilenet_v2": 32,
    "mobilenet_v3_small": 32,
    "efficientnet_b0": 32,
    "efficientnet_v2_s": 32,
    "regnet_x_400mf": 32,
    "regnet_y_400mf": 32,
    "mnasnet0_5": 32,
    "shufflenet_v2_x0_5": 32,
    "densenet121": 32,
    "googlenet": 32,
    "inception_v3": 75,
    "squeezenet1_0": 48,
    "vgg11_bn": 32,
    "alexnet": 64,
}


def test_every_conv_bn_family_is_listed_and_transformers_are_not():
    for family in (
        "resnet",
        "resnext",
        "wide_resnet",
        "mobilenet_v2",
        "mobilenet_v3",
        "efficientnet_b",
        "efficientnet_v2",
        "regnet_x",
        "regnet_y",
        "mnasnet",
        "shufflenet",
        "densenet",
        "googlenet",
        "inception",
        "squeezenet",
        "vgg",
        "alexnet",
    ):
        assert any(name.startswith(f"torchvision:{family}") for name in LISTED), family
    assert not any(bad in name for name in LISTED for bad in ("vit_", "swin", "convnext", "maxvit"))
    assert {f"torchvision:{name}" for name in FAMILIES} <= set(LISTED)


def published_size(name: str) -> int:
    return tv.get_model_weights(name).DEFAULT.transforms().crop_size[0]


@pytest.mark.parametrize("arch", LISTED)
def test_macs_and_params_match_torchvision_published_figures(arch):
    name = arch.split(":")[1]
    meta = tv.get_model_weights(name).DEFAULT.meta
    with zoo.meta_parameters():
        supernet = models.Supernet(models.NetSpec(arch, 1000, published_size(name)))
    full = supernet.space.full()
    macs = models.count_macs(supernet.space, full) / 1e9
    # Published GMACs are rounded to 3 decimals: the count must round to them (the issue asked for 1%;
    # ShuffleNetV2 x0.5's 0.04048 against 0.040 is 1.2% off, all of it that rounding).
    assert abs(macs - meta["_ops"]) <= 0.0005, (macs, meta["_ops"])
    params = models.count_params(supernet.space, full)
    if name == "inception_v3":  # torchvision counts the training-only auxiliary classifier; autoslim drops it
        with zoo.meta_parameters():
            aux = tv.inception_v3(weights=None, aux_logits=True, init_weights=False).AuxLogits
        assert params + sum(p.numel() for p in aux.parameters()) == meta["num_params"]
    else:
        assert params == meta["num_params"]


def randomised(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics and affine parameters, so every channel's slicing matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.3, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.normal_(0.0, 0.2, generator=generator)
    return model.eval()


@functools.cache
def original(name: str) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return randomised(
            zoo._without_aux_heads(functools.partial(tv.get_model, name, weights=None, num_classes=10)), 1
        )


def independent_macs(model: nn.Module, size: int) -> int:
    counter = FlopCountAnalysis(model, torch.zeros(1, 3, size, size))
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = counter.by_operator()
    return int(by_op.get("conv", 0) + by_op.get("linear", 0) + by_op.get("addmm", 0) + by_op.get("matmul", 0))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_converted_network_equals_original_and_exports_exactly(name):
    size = FAMILIES[name]
    torch.set_num_threads(1)
    net = original(name)
    supernet = models.convert(net, size, name=f"torchvision:{name}").eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), net(x), rtol=0, atol=1e-5)
    generator = torch.Generator().manual_seed(3)
    for widths in (supernet.space.full(), supernet.space.smallest(), supernet.space.random(generator)):
        supernet.set_widths(widths)
        slim = models.export_slim(supernet)
        with torch.no_grad():
            torch.testing.assert_close(slim(x), supernet(x), rtol=1e-4, atol=1e-4)
            if widths == supernet.space.full():  # converting and exporting gives the original network back
                torch.testing.assert_close(slim(x), net(x), rtol=0, atol=1e-5)
        assert models.count_macs(supernet.space, widths) == independent_macs(slim, size)
        assert models.count_params(supernet.space, widths) == sum(p.numel() for p in slim.parameters())
