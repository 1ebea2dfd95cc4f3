"""The channel analysis on networks a user writes: concatenation, gates, chunks, shuffles, grouped
convs, literal slices and ops it cannot model.

Each network is an ordinary ``nn.Module`` converted with `models.convert`.  At random
configurations the exported slim model (the user's own forward code on physically slim layers) must
compute what the supernet computes, and the analytic MACs must equal an independent count (fvcore
over the exported model).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis
from torch import nn

import models


def fvcore_macs(model: nn.Module, size: int) -> int:
    counter = FlopCountAnalysis(model.eval(), torch.zeros(1, 3, size, size))
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = counter.by_operator()
    return int(by_op.get("conv", 0) + by_op.get("linear", 0) + by_op.get("addmm", 0))


def conv_bn(cin: int, cout: int, kernel: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class ConcatSENet(nn.Module):
    """Two branches concatenated (Inception/DenseNet style), a squeeze-excitation gate, a residual."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.left, self.right = conv_bn(16, 24, 1), conv_bn(16, 16, 3)
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


class ChunkShuffleNet(nn.Module):
    """ShuffleNetV2's unit written by a user: chunk, one half through convs, concat, shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 32)
        self.branch = nn.Sequential(conv_bn(16, 16, 1), conv_bn(16, 16, 3, groups=16), conv_bn(16, 16, 1))
        self.grouped = conv_bn(32, 48, 3, groups=4)
        self.head = nn.Linear(48, 10)

    def forward(self, x):
        a, b = self.stem(x).chunk(2, dim=1)
        x = F.channel_shuffle(torch.cat([a, self.branch(b)], 1), 2)
        return self.head(self.grouped(x).mean((2, 3)))


class ChunkNet(nn.Module):
    """conv -> chunk -> a conv per half: the case a per-conv width model counted as 700k MACs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 64, 3, padding=1)
        self.b, self.c = nn.Conv2d(32, 48, 3, padding=1), nn.Conv2d(32, 16, 1)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        left, right = self.a(x).chunk(2, dim=1)
        return self.head(torch.cat([self.b(left), self.c(right)], 1).mean((2, 3)))


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.3, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.normal_(0.0, 0.2, generator=generator)
    return model.eval()


@pytest.mark.parametrize("make", [ConcatSENet, ChunkShuffleNet, ChunkNet], ids=lambda m: m.__name__)
def test_user_network_converts_exports_and_counts_exactly(make):
    torch.manual_seed(0)
    net = randomise(make())
    supernet = models.convert(net, input_size=16).eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), net(x), rtol=0, atol=1e-6)
    assert models.count_macs(supernet.space, supernet.space.full()) == fvcore_macs(net, 16)
    generator = torch.Generator().manual_seed(2)
    for _ in range(4):
        widths = supernet.space.random(generator)
        supernet.set_widths(widths)
        slim = models.export_slim(supernet)
        with torch.no_grad():
            torch.testing.assert_close(slim(x), supernet(x), rtol=1e-5, atol=1e-5)
        assert models.count_macs(supernet.space, widths) == fvcore_macs(slim, 16)
        assert models.count_params(supernet.space, widths) == sum(p.numel() for p in slim.parameters())


def test_concatenation_joins_groups_and_the_gate_ties_to_the_gated_tensor():
    space = models.convert(ConcatSENet(), input_size=16).space
    mix = space.layers["mix.0"]
    assert mix.inputs.multiplicity == {"left.0": 1, "right.0": 1}  # the consumer sees both segments
    assert space.group_of("excite") == space.group_of("mix.0") == space.group_of("body.0")  # gate and residual
    assert space.group_of("squeeze") == "squeeze"  # the squeezed channels are a group of their own
    widths = {**space.full(), "left.0": 8, "right.0": 16}
    assert mix.inputs.count(widths) == 24
    assert mix.inputs.positions(widths).tolist() == [*range(8), *range(24, 40)]


def test_chunk_counts_exactly():
    supernet = models.convert(ChunkNet(), input_size=16)
    # a: 16*16*27*64 = 442,368; b: 16*16*288*48 = 3,538,944; c: 16*16*32*16 = 131,072; head 640
    assert models.count_macs(supernet.space, supernet.space.full()) == 442_368 + 3_538_944 + 131_072 + 640
    group = supernet.space.groups[supernet.space.group_of("a")]
    assert group.max == 32 and len(group.blocks) == 2  # the two halves are one group: they stay equal
    widths = {**supernet.space.full(), group.name: 16}
    assert supernet.space.layers["a"].outputs.count(widths) == 32
    assert supernet.space.layers["b"].inputs.count(widths) == 16


def test_grouped_conv_keeps_every_group_the_same_size():
    space = models.convert(ChunkShuffleNet(), input_size=16).space
    grouped = space.layers["grouped.0"]
    for widths in (space.smallest(), space.random(torch.Generator().manual_seed(0)), space.full()):
        assert grouped.outputs.count(widths) % 4 == 0 and grouped.inputs.count(widths) % 4 == 0
        assert grouped.outputs.count(widths) % 8 == 0  # four blocks of a multiple of 2: 8-aligned totals
    assert space.groups[space.group_of("grouped.0")].divisor == 2


def test_literal_split_keeps_its_channels_whole():
    class Split(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.head = nn.Conv2d(3, 16, 3), nn.Conv2d(8, 8, 1), nn.Linear(8, 2)

        def forward(self, x):
            first, _ = self.a(x).split(8, dim=1)
            return self.head(self.b(first).mean((2, 3)))

    space = models.convert(Split(), input_size=16).space
    assert space.layers["a"].outputs.fixed and not space.layers["b"].outputs.fixed


class ManualShuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU())
        self.shuffle = Shuffle()
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.shuffle(self.block(x)).mean((2, 3)))


class Shuffle(nn.Module):
    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


def test_an_op_that_moves_channels_is_an_error_naming_it_and_the_module():
    with pytest.raises(NotImplementedError, match=r"node 'view'.*in module 'shuffle'.*moves channels.*keep="):
        models.convert(ManualShuffle(), input_size=16)


def test_keep_makes_such_a_module_fixed():
    net = randomise(ManualShuffle())
    supernet = models.convert(net, input_size=16, keep=["shuffle"]).eval()
    assert supernet.space.layers["block.0"].outputs.fixed and supernet.space.groups == {}
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(models.export_slim(supernet)(x), net(x))


def test_a_layer_subclass_with_its_own_forward_is_refused():
    class PaddedConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(F.pad(x, (1, 1, 1, 1)))

    net = nn.Sequential(PaddedConv(3, 8, 3), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(TypeError, match=r"layer '0' is a .*PaddedConv.*own forward"):
        models.convert(net, input_size=16)
