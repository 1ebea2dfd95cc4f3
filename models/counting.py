"""Exact MAC and parameter counts of any configuration, from the traced layer records alone.

No forward pass: the greedy search calls these thousands of times.  MACs are multiply-accumulates
of convolutions and linear layers (the papers' "FLOPs"); BN, activations, pooling and additions
are not counted, as in the papers.  Parameters include BN's affine weights and biases (as
torchvision's published counts do) but not running statistics.
"""

from __future__ import annotations

from models.space import ChannelSpace, Layer


def _in_out(space: ChannelSpace, layer: Layer, widths: dict[str, int]) -> tuple[int, int]:
    cin = space.channels_of(layer.source, widths)
    if layer.kind == "conv":
        return cin, cin if layer.depthwise else widths[layer.group]
    if layer.kind == "bn":
        return cin, cin
    return cin, layer.out_full


def _conv_groups(layer: Layer, cin: int) -> int:
    return cin if layer.depthwise else layer.groups


def count_macs(space: ChannelSpace, widths: dict[str, int]) -> int:
    """Multiply-accumulates of one image at ``space.input_size``."""
    total = 0
    for layer in space.layers.values():
        cin, cout = _in_out(space, layer, widths)
        if layer.kind == "conv":
            kh, kw = layer.kernel
            h, w = layer.out_hw
            total += kh * kw * (cin // _conv_groups(layer, cin)) * cout * h * w
        elif layer.kind == "linear":
            total += cin * cout
    return total


def count_params(space: ChannelSpace, widths: dict[str, int]) -> int:
    """Learnable parameters of the slim network at ``widths``."""
    total = 0
    for layer in space.layers.values():
        cin, cout = _in_out(space, layer, widths)
        if layer.kind == "conv":
            kh, kw = layer.kernel
            total += kh * kw * (cin // _conv_groups(layer, cin)) * cout + (cout if layer.bias else 0)
        elif layer.kind == "bn":
            total += 2 * cin
        else:
            total += cin * cout + (cout if layer.bias else 0)
    return total
