"""Exact MAC and parameter counts of any configuration, from the analysed layer records alone.

No forward pass: the greedy search calls these thousands of times.  MACs are multiply-accumulates
of convolutions and linear layers (the papers' "FLOPs"); BN, activations, pooling, additions and
gates are not counted, as in the papers.  Parameters include BN's affine weights and biases (as
torchvision's published counts do) but not running statistics.
"""

from __future__ import annotations

from models.space import ChannelSpace, Layer


def _conv_weights(layer: Layer, cin: int, cout: int) -> int:
    """Weights of a conv: each output channel sees ``cin / groups`` inputs over the kernel."""
    kh, kw = layer.kernel
    per_output = 1 if layer.depthwise else cin // layer.groups
    return kh * kw * per_output * cout


def count_macs(space: ChannelSpace, widths: dict[str, int]) -> int:
    """Multiply-accumulates of one image at ``space.input_size``."""
    total = 0
    for layer in space.layers.values():
        if layer.kind == "bn":
            continue
        cin, cout = layer.inputs.count(widths), layer.outputs.count(widths)
        if layer.kind == "conv":
            h, w = layer.out_hw
            total += _conv_weights(layer, cin, cout) * h * w
        else:
            total += cin * cout
    return total


def count_params(space: ChannelSpace, widths: dict[str, int]) -> int:
    """Learnable parameters of the slim network at ``widths``."""
    total = 0
    for layer in space.layers.values():
        cin, cout = layer.inputs.count(widths), layer.outputs.count(widths)
        if layer.kind == "conv":
            total += _conv_weights(layer, cin, cout) + (cout if layer.bias else 0)
        elif layer.kind == "bn":
            total += 2 * cin
        else:
            total += cin * cout + (cout if layer.bias else 0)
    return total
