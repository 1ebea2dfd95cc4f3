"""ResNet-18 and ResNet-50 (He et al., 2016), torchvision layout (stride on the 3x3 conv, "v1.5")."""

from __future__ import annotations

from torch import nn

from models.ops import LayerFactory, make_divisible
from models.registry import register


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, layers: LayerFactory, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = mid * self.expansion
        self.conv1, self.bn1 = layers.conv(cin, mid, 3, stride), layers.bn(mid)
        self.conv2, self.bn2 = layers.conv(mid, cout, 3), layers.bn(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(layers, cin, cout, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, layers: LayerFactory, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = mid * self.expansion
        self.conv1, self.bn1 = layers.conv(cin, mid, 1), layers.bn(mid)
        self.conv2, self.bn2 = layers.conv(mid, mid, 3, stride), layers.bn(mid)
        self.conv3, self.bn3 = layers.conv(mid, cout, 1), layers.bn(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(layers, cin, cout, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _shortcut(layers: LayerFactory, cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(layers.conv(cin, cout, 1, stride), layers.bn(cout))


class ResNet(nn.Module):
    def __init__(
        self,
        layers: LayerFactory,
        block: type,
        depths: list[int],
        num_classes: int,
        width_mult: float,
        cifar_stem: bool,
    ) -> None:
        super().__init__()
        width = make_divisible(64 * width_mult)
        if cifar_stem:  # 3x3 stride-1 stem, no max-pool: 32 px inputs keep their resolution
            self.conv1 = layers.conv(3, width, 3, 1)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = layers.conv(3, width, 7, 2)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = layers.bn(width)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        for i, depth in enumerate(depths):
            mid = make_divisible(64 * 2**i * width_mult)
            blocks = []
            for j in range(depth):
                blocks.append(block(layers, width, mid, 2 if i > 0 and j == 0 else 1))
                width = mid * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = layers.linear(width, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


@register("resnet18")
def resnet18(layers: LayerFactory, num_classes: int, width_mult: float, cifar_stem: bool) -> nn.Module:
    return ResNet(layers, BasicBlock, [2, 2, 2, 2], num_classes, width_mult, cifar_stem)


@register("resnet50")
def resnet50(layers: LayerFactory, num_classes: int, width_mult: float, cifar_stem: bool) -> nn.Module:
    return ResNet(layers, Bottleneck, [3, 4, 6, 3], num_classes, width_mult, cifar_stem)
