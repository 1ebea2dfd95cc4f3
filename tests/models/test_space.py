"""The traced channel space of the built-in networks: which layers share a width, bounds and grid.

The analysis of arbitrary graphs (concatenation, gates, chunks, shuffles, grouped convs) is tested
in test_graph.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import models
from models.ops import LayerFactory
from models.space import trace_space


def group_with(space, layer: str) -> set[str]:
    return set(space.groups[space.group_of(layer)].layers)


@pytest.mark.parametrize("arch", models.list_archs())
def test_groups_partition_convs_and_depthwise_follows_input(arch):
    space = models.build_supernet(arch, width_mult=0.5).space
    convs = [name for name, layer in space.layers.items() if layer.kind == "conv"]
    members = [name for g in space.groups.values() for name in g.layers]
    assert sorted(members) == sorted(convs)
    for layer in space.layers.values():
        if layer.kind == "conv" and layer.depthwise:
            assert layer.group == layer.source, f"{layer.name} must share its input's width"
        if layer.kind == "bn":
            assert layer.in_full == space.groups[layer.source].max
    first = next(iter(space.layers.values()))
    assert first.inputs.fixed and len(first.inputs) == 3  # the image's channels are never removed


@pytest.mark.parametrize("arch", models.list_archs())
def test_group_bounds_and_grid(arch):
    supernet = models.build_supernet(arch, width_mult=0.5, divisor=8, width_min=0.25)
    for group in supernet.space.groups.values():
        grid = group.grid()
        assert grid[0] == group.max and grid[-1] == group.min
        assert all(w % 8 == 0 for w in grid[1:]) and grid == sorted(grid, reverse=True)
        assert group.min <= max(8, group.max)
    assert supernet.space.uniform(1.0) == supernet.space.full()


def test_resnet18_stage_outputs_share_a_group_with_the_shortcut():
    space = models.build_supernet("resnet18", width_mult=0.5).space
    # Stage 1 has no projection: the stem's output is added to both blocks' outputs.
    assert group_with(space, "conv1") == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    for stage in (2, 3, 4):
        assert group_with(space, f"layer{stage}.0.downsample.0") == {
            f"layer{stage}.0.conv2",
            f"layer{stage}.0.downsample.0",
            f"layer{stage}.1.conv2",
        }
        for block in (0, 1):  # a block's inner conv is free
            assert group_with(space, f"layer{stage}.{block}.conv1") == {f"layer{stage}.{block}.conv1"}
    assert len(space.groups) == 12


def test_resnet50_bottleneck_outputs_tie_per_stage():
    space = models.build_supernet("resnet50", width_mult=0.25).space
    for stage, depth in zip((1, 2, 3, 4), (3, 4, 6, 3)):
        expected = {f"layer{stage}.{b}.conv3" for b in range(depth)} | {f"layer{stage}.0.downsample.0"}
        assert group_with(space, f"layer{stage}.0.conv3") == expected
    assert "conv1" not in group_with(space, "layer1.0.conv3")  # the stage-1 projection frees the stem


def test_mobilenet_v2_depthwise_tied_to_expand_and_residuals_tied():
    space = models.build_supernet("mobilenet_v2", width_mult=0.5).space
    assert group_with(space, "features.0.0") == {"features.0.0", "features.1.conv.0.0"}  # t=1: no expand conv
    for block in range(2, 18):
        expand, depthwise = f"features.{block}.conv.0.0", f"features.{block}.conv.1.0"
        assert group_with(space, depthwise) == {expand, depthwise}
    # Residual blocks: 24-channel stage (blocks 2-3), 32 (4-6), 64 (7-10), 96 (11-13), 160 (14-16).
    for first, last in ((2, 3), (4, 6), (7, 10), (11, 13), (14, 16)):
        assert group_with(space, f"features.{first}.conv.2.0") == {
            f"features.{b}.conv.2.0" for b in range(first, last + 1)
        }
    assert group_with(space, "features.18.0") == {"features.18.0"}


def test_mobilenet_v1_depthwise_tied_to_previous_pointwise():
    space = models.build_supernet("mobilenet_v1", width_mult=0.5).space
    assert group_with(space, "features.0.0") == {"features.0.0", "features.1.0.0"}
    for block in range(2, 14):
        assert group_with(space, f"features.{block}.0.0") == {f"features.{block - 1}.1.0", f"features.{block}.0.0"}
    assert len(space.groups) == 14


class TwoBranches(nn.Module):
    """Two convs on the image joined by ``join``, then a conv and a classifier."""

    def __init__(self, join, mid_in: int = 8) -> None:
        super().__init__()
        layers = LayerFactory()
        self.join = join
        self.a, self.b = layers.conv(3, 8, 3), layers.conv(3, 8, 3)
        self.c = layers.conv(mid_in, 8, 1)
        self.fc = layers.linear(8, 10)

    def forward(self, x):
        y = self.c(self.join(self.a(x), self.b(x)))
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize(
    "join",
    [
        lambda p, q: p + q,
        lambda p, q: torch.add(p, q),
        lambda p, q: p.add(q),
        lambda p, q: p - q,
    ],
    ids=["operator", "torch.add", "method", "subtract"],
)
def test_traced_elementwise_join_ties_branches(join):
    space = trace_space(TwoBranches(join), input_size=16)
    assert group_with(space, "a") == {"a", "b"}
    assert space.layers["c"].source == space.group_of("a")


def test_plain_torch_layer_is_reported_by_name():
    net = TwoBranches(lambda p, q: p + q)
    net.c = nn.Conv2d(8, 8, 1)
    with pytest.raises(TypeError, match=r"layer 'c' is a plain Conv2d.*models.convert"):
        models.Supernet(models.NetSpec("two-branches", input_size=16), net=net)


def test_conv_added_to_the_image_keeps_its_channels():
    class ImageResidual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = LayerFactory().conv(3, 3, 3), LayerFactory().linear(3, 2)

        def forward(self, x):
            return self.fc((x + self.conv(x)).mean((2, 3)))

    space = trace_space(ImageResidual(), input_size=16)
    assert space.groups == {} and space.layers["conv"].outputs.fixed


def test_resolution_is_recorded_per_layer():
    space = models.build_supernet("resnet18", input_size=224, num_classes=1000, width_mult=0.25).space
    assert space.layers["conv1"].out_hw == (112, 112)
    assert space.layers["layer1.0.conv1"].out_hw == (56, 56)
    assert space.layers["layer4.1.conv2"].out_hw == (7, 7)
    cifar = models.build_supernet("resnet18", input_size=32, width_mult=0.25).space
    assert cifar.layers["conv1"].out_hw == (32, 32) and cifar.layers["layer4.1.conv2"].out_hw == (4, 4)
