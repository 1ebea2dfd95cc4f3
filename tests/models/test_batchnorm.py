"""Shared BN (US-Net) and switchable BN (S-Net): which statistics a forward pass touches, and
BN post-statistics (``engine.calibrate.calibrate_bn``) being the exact statistics of the data."""

from __future__ import annotations

import pytest
import torch

import models
from engine.calibrate import calibrate_bn
from engine.data.batches import Batches
from models.ops import SlimBatchNorm2d, SwitchableBatchNorm2d


def test_shared_bn_updates_only_the_active_prefix_in_place():
    generator = torch.Generator().manual_seed(0)
    bn = SlimBatchNorm2d(16, momentum=0.25)
    with torch.no_grad():
        bn.running_mean.normal_(generator=generator)
        bn.running_var.uniform_(0.5, 2.0, generator=generator)
    mean_before, var_before = bn.running_mean.clone(), bn.running_var.clone()
    mean_buffer = bn.running_mean.data_ptr()
    x = torch.randn(6, 8, 5, 5, generator=generator) * 3 + 1
    bn.train()(x)
    batch_mean = x.mean((0, 2, 3))
    batch_var = x.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_mean[:8], 0.75 * mean_before[:8] + 0.25 * batch_mean)
    torch.testing.assert_close(bn.running_var[:8], 0.75 * var_before[:8] + 0.25 * batch_var)
    assert torch.equal(bn.running_mean[8:], mean_before[8:]) and torch.equal(bn.running_var[8:], var_before[8:])
    assert bn.running_mean.data_ptr() == mean_buffer and int(bn.num_batches_tracked) == 1


def test_shared_bn_eval_uses_the_prefix_statistics():
    bn = SlimBatchNorm2d(4, affine=False).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        bn.running_var.copy_(torch.tensor([4.0, 4.0, 9.0, 9.0]))
    out = bn(torch.full((1, 2, 1, 1), 5.0))
    torch.testing.assert_close(out.flatten(), torch.tensor([2.0, 1.5]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", models.list_archs())
def test_training_at_a_sub_width_leaves_the_other_channels_alone(arch):
    supernet = models.build_supernet(arch, num_classes=10, input_size=32, width_mult=0.25)
    widths = supernet.space.smallest()
    supernet.set_widths(widths)
    bns = {name: m for name, m in supernet.net.named_modules() if isinstance(m, SlimBatchNorm2d)}
    before = {name: m.running_mean.clone() for name, m in bns.items()}
    supernet.train()(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    for name, bn in bns.items():
        c = supernet.space.in_channels_of(name, widths)
        assert torch.equal(bn.running_mean[c:], before[name][c:]), name
        assert not torch.equal(bn.running_mean[:c], before[name][:c]), name


def record_bn_inputs(model: torch.nn.Module) -> tuple[dict[str, list[torch.Tensor]], list]:
    inputs: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, SlimBatchNorm2d):
            inputs[name] = []
            handles.append(
                m.register_forward_pre_hook(lambda _m, args, name=name: inputs[name].append(args[0].clone()))
            )
    return inputs, handles


@pytest.mark.parametrize("batch_size", [48, 16], ids=["one-batch", "three-batches"])
def test_calibration_gives_the_exact_statistics_of_the_data(batch_size, randomise_bn):
    """Momentum ``None`` = cumulative average: exact mean; with one batch also the exact variance.

    With several equal batches the variance is the mean of the per-batch (unbiased) variances, the
    estimator PyTorch's cumulative BN averaging and the US-Net reference implementation use.
    """
    generator = torch.Generator().manual_seed(2)
    supernet = randomise_bn(models.build_supernet("mobilenet_v2", width_mult=0.25), generator)
    supernet.set_widths(supernet.space.random(generator))
    x = torch.randn(48, 3, 32, 32, generator=generator)
    momenta = [m.momentum for m in supernet.modules() if isinstance(m, SlimBatchNorm2d)]
    inputs, handles = record_bn_inputs(supernet.net)
    calibrate_bn(supernet, Batches(x, torch.zeros(48, dtype=torch.long), batch_size))
    for h in handles:
        h.remove()
    assert supernet.training  # the model's mode is restored
    assert momenta == [m.momentum for m in supernet.modules() if isinstance(m, SlimBatchNorm2d)]
    for name, bn in supernet.net.named_modules():
        if not isinstance(bn, SlimBatchNorm2d):
            continue
        batches = inputs[name]
        assert len(batches) == 48 // batch_size
        c = batches[0].shape[1]
        data = torch.cat(batches)
        torch.testing.assert_close(bn.running_mean[:c], data.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
        expected_var = torch.stack([b.var((0, 2, 3), unbiased=True) for b in batches]).mean(0)
        torch.testing.assert_close(bn.running_var[:c], expected_var, atol=1e-5, rtol=1e-4)
        if len(batches) == 1:
            torch.testing.assert_close(bn.running_var[:c], data.var((0, 2, 3), unbiased=True), atol=1e-5, rtol=1e-4)
        assert int(bn.num_batches_tracked) == len(batches)


def test_switchable_bn_trains_only_the_active_switch():
    supernet = models.build_supernet("resnet18", width_mult=0.25, switches=(0.5,))
    switchable = [m for m in supernet.modules() if isinstance(m, SwitchableBatchNorm2d)]
    assert switchable and not any(isinstance(m, SlimBatchNorm2d) for m in supernet.modules())
    supernet.set_uniform(0.5)
    supernet.train()(torch.randn(4, 3, 32, 32))
    for m in switchable:
        half, full = m.bn  # widths sorted: the 0.5x switch first
        assert int(half.num_batches_tracked) == 1 and int(full.num_batches_tracked) == 0
        assert torch.equal(full.running_mean, torch.zeros_like(full.running_mean))
