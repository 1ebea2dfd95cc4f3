"""MobileNetV1 (Howard et al., 2017): a stem conv and 13 depthwise-separable blocks."""

from __future__ import annotations

from torch import nn

from models.ops import LayerFactory, make_divisible
from models.registry import register

# (output channels, stride) of the 13 depthwise-separable blocks, ImageNet layout.
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def conv_bn_relu(layers: LayerFactory, cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(layers.conv(cin, cout, kernel, stride, groups), layers.bn(cout), nn.ReLU(inplace=True))


class MobileNetV1(nn.Module):
    def __init__(self, layers: LayerFactory, num_classes: int, width_mult: float, cifar_stem: bool) -> None:
        super().__init__()
        width = make_divisible(32 * width_mult)
        features = [conv_bn_relu(layers, 3, width, 3, 1 if cifar_stem else 2)]
        for channels, stride in BLOCKS:
            out = make_divisible(channels * width_mult)
            features.append(
                nn.Sequential(
                    conv_bn_relu(layers, width, width, 3, stride, groups=width),
                    conv_bn_relu(layers, width, out, 1, 1),
                )
            )
            width = out
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = layers.linear(width, num_classes)

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.classifier(x.flatten(1))


@register("mobilenet_v1")
def mobilenet_v1(layers: LayerFactory, num_classes: int, width_mult: float, cifar_stem: bool) -> nn.Module:
    """CIFAR stem: the first conv keeps stride 1 (32 px inputs end at 2x2)."""
    return MobileNetV1(layers, num_classes, width_mult, cifar_stem)
