"""timm networks by name (``timm:NAME``): its conv/BN families convert, export and count exactly.

timm builds many of them from its own BN-plus-activation layer (``BatchNormAct2d``) and its own
``Linear``; both have slimmable twins.  A conv with TensorFlow "same" padding (``Conv2dSame``, in
the ``tf_`` ports) has its own forward and is refused by name.
"""

from __future__ import annotations

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

import models

timm = pytest.importorskip("timm")

NETWORKS = ["resnet18", "efficientnet_b0", "mobilenetv3_small_100", "regnety_002", "dla34", "rexnet_100"]


def macs_by_fvcore(model: nn.Module, size: int) -> int:
    counter = FlopCountAnalysis(model.eval(), torch.zeros(1, 3, size, size))
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = counter.by_operator()
    return int(by_op.get("conv", 0) + by_op.get("linear", 0) + by_op.get("addmm", 0))


@pytest.mark.parametrize("name", NETWORKS)
def test_timm_network_converts_exports_and_counts_exactly(name):
    torch.manual_seed(0)
    supernet = models.build_supernet(f"timm:{name}", num_classes=10, input_size=64).eval()
    plain = timm.create_model(name, pretrained=False, num_classes=10).eval()
    plain.load_state_dict(supernet.net.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), plain(x), rtol=0, atol=1e-5)
    widths = supernet.space.random(torch.Generator().manual_seed(2))
    supernet.set_widths(widths)
    slim = models.export_slim(supernet)
    with torch.no_grad():
        torch.testing.assert_close(slim(x), supernet(x), rtol=1e-4, atol=1e-4)
    assert models.count_macs(supernet.space, widths) == macs_by_fvcore(slim, 64)


def test_same_padding_conv_is_refused_by_name():
    with pytest.raises(TypeError, match=r"layer 'conv_stem' is a timm\.layers\.conv2d_same\.Conv2dSame"):
        models.build_supernet("timm:tf_efficientnet_b0", num_classes=10, input_size=64)
