"""MobileNetV2 (Sandler et al., 2018): inverted residual blocks with linear bottlenecks."""

from __future__ import annotations

from torch import nn

from models.ops import LayerFactory, make_divisible
from models.registry import register

# (expansion t, output channels c, repeats n, first stride s), ImageNet layout.
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def conv_bn(
    layers: LayerFactory, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    parts = [layers.conv(cin, cout, kernel, stride, groups), layers.bn(cout)]
    if relu:
        parts.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*parts)


class InvertedResidual(nn.Module):
    def __init__(self, layers: LayerFactory, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        parts = [conv_bn(layers, cin, hidden, 1)] if expand != 1 else []
        parts += [
            conv_bn(layers, hidden, hidden, 3, stride, groups=hidden),
            conv_bn(layers, hidden, cout, 1, relu=False),
        ]
        self.conv = nn.Sequential(*parts)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, layers: LayerFactory, num_classes: int, width_mult: float, cifar_stem: bool) -> None:
        super().__init__()
        width = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [conv_bn(layers, 3, width, 3, 1 if cifar_stem else 2)]
        for expand, channels, repeats, stride in SETTINGS:
            out = make_divisible(channels * width_mult)
            for i in range(repeats):
                features.append(InvertedResidual(layers, width, out, stride if i == 0 else 1, expand))
                width = out
        features.append(conv_bn(layers, width, last, 1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = layers.linear(last, num_classes)

    def forward(self, x):
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))


@register("mobilenet_v2")
def mobilenet_v2(layers: LayerFactory, num_classes: int, width_mult: float, cifar_stem: bool) -> nn.Module:
    """CIFAR stem: the first conv keeps stride 1 (32 px inputs end at 2x2)."""
    return MobileNetV2(layers, num_classes, width_mult, cifar_stem)
