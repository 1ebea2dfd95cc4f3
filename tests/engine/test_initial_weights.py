"""A supernet started from a user's trained weights (``.pt`` or ``.safetensors`` state dicts).

The full width must compute exactly what the user's model computes; a tensor of another shape is an
error naming its key and both shapes; a classifier trained for another class count is replaced;
and the supernet cache tells supernets trained from different weights apart.
"""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file
from torchvision import models as tv

import models
from engine.initial_weights import (
    WeightsError,
    check_fits,
    file_sha256,
    load_initial_weights,
    network_keys,
    network_shapes,
    read_state_dict,
    shapes_of,
    start_from_weights,
)
from engine.sampling import Member
from engine.spec import PRETRAINED_TRAIN, SearchSpec, TrainSpec
from engine.supernet_cache import supernet_key
from engine.train import build_for_mode, sandwich_step

TV = "torchvision:mobilenet_v3_small"


def trained_looking(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with random weights and BN statistics, as training leaves them (not the init's ones and zeros)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(
                    torch.rand(tensor.shape, generator=generator) * 0.2 + 0.9
                    if tensor.dim() == 1
                    else torch.randn(tensor.shape, generator=generator) * 0.1
                )
    return model.eval()


def user_model(arch: str, num_classes: int = 10) -> torch.nn.Module:
    if arch == TV:
        return trained_looking(tv.mobilenet_v3_small(num_classes=num_classes))
    return trained_looking(models.build(arch, num_classes=num_classes, input_size=16, width_mult=0.25))


def saved(state: dict[str, torch.Tensor], fmt: str, folder) -> object:
    path = folder / f"weights.{fmt}"
    if fmt == "pt":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
@pytest.mark.parametrize(("arch", "size"), [(TV, 32), ("resnet18", 16)])
def test_full_width_logits_equal_the_original_models(arch, size, fmt, tmp_path):
    model = user_model(arch)
    supernet = build_for_mode(arch, "usnet-nonuniform", 10, size, 1.0 if arch == TV else 0.25, seed=3).eval()
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        assert not torch.allclose(supernet(x), expected, atol=1e-3)  # a fresh supernet computes something else
        loaded = load_initial_weights(supernet, read_state_dict(saved(model.state_dict(), fmt, tmp_path)))
        assert loaded.replaced == []
        torch.testing.assert_close(supernet(x), expected, rtol=1e-5, atol=1e-5)


def test_a_tensor_of_another_shape_is_named_with_both_shapes(tmp_path):
    state = user_model("resnet18").state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(8, 16, 3, 3)
    supernet = build_for_mode("resnet18", "usnet-nonuniform", 10, 16, 0.25)
    want = supernet.net.state_dict()["layer2.0.conv1.weight"].shape
    with pytest.raises(
        WeightsError,
        match=rf"layer2\.0\.conv1\.weight has shape \[8, 16, 3, 3\] in the weights "
        rf"but \[{', '.join(map(str, want))}\] in the network",
    ) as caught:
        load_initial_weights(supernet, read_state_dict(saved(state, "pt", tmp_path)))
    assert caught.value.key == "layer2.0.conv1.weight"


def test_missing_and_extra_keys_are_named():
    supernet = build_for_mode("resnet18", "usnet-nonuniform", 10, 16, 0.25)
    state = user_model("resnet18").state_dict()
    without = {k: v for k, v in state.items() if k != "layer1.1.bn2.bias"}
    with pytest.raises(WeightsError, match=r"layer1\.1\.bn2\.bias \(shape \[\d+\]\) is missing"):
        load_initial_weights(supernet, without)
    with pytest.raises(WeightsError, match=r"extra\.weight \(shape \[3\]\) in the weights is not in the network"):
        load_initial_weights(supernet, {**state, "extra.weight": torch.zeros(3)})
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert load_initial_weights(supernet, old).replaced == []  # older checkpoints lack these counters


def test_a_head_for_another_class_count_is_replaced_and_the_rest_loaded():
    model = user_model(TV, num_classes=100)
    supernet = build_for_mode(TV, "usnet-nonuniform", 10, 32, seed=3)
    fresh_head = supernet.net.classifier[3].weight.detach().clone()
    loaded = load_initial_weights(supernet, model.state_dict())
    assert sorted(loaded.replaced) == ["classifier.3.bias", "classifier.3.weight"]
    assert (loaded.weights_classes, loaded.network_classes) == (100, 10)
    assert "classifier.3 replaced" in loaded.head_message() and "100 classes" in loaded.head_message()
    assert torch.equal(supernet.net.classifier[3].weight, fresh_head)
    assert torch.equal(supernet.net.classifier[0].weight, model.classifier[0].weight)
    assert torch.equal(supernet.net.features[3].block[0][1].running_var, model.features[3].block[0][1].running_var)


def test_the_start_is_reported_with_the_accuracy_before_training_and_the_replaced_head(tmp_path, digits16):
    weights = tmp_path / "four.pt"
    torch.save(user_model("resnet18", num_classes=4).state_dict(), weights)
    spec = SearchSpec("resnet18", "digits", macs=[1], input_size=16, width_mult=0.25, weights=str(weights))
    notices: list[dict] = []
    start_from_weights(
        build_for_mode("resnet18", "usnet-nonuniform", 10, 16, 0.25),
        spec,
        digits16,
        lambda report: notices.append(report["event"]),
    )
    assert [n["kind"] for n in notices] == ["weights", "head-replaced"]
    assert notices[0]["data"]["sha256"] == file_sha256(weights) and 0 <= notices[0]["data"]["val_accuracy"] <= 100
    assert notices[1]["level"] == "warning" and notices[1]["message"] == (
        "head fc replaced (fresh initialisation): the weights are for 4 classes, this dataset has 10"
    )


def test_the_meta_device_check_agrees_with_the_real_network():
    supernet = build_for_mode(TV, "usnet-nonuniform", 10, 32)
    shapes, head = network_shapes(supernet.spec)
    assert shapes == network_keys(supernet) and head == {"classifier.3.weight", "classifier.3.bias"}
    assert check_fits(supernet.spec, shapes_of(user_model(TV, 7).state_dict())).replaced == sorted(head, reverse=True)
    snet = build_for_mode("resnet18", "snet", 10, 16, 0.25).spec
    with pytest.raises(WeightsError, match="S-Net's switchable BN"):
        check_fits(snet, shapes_of(user_model("resnet18").state_dict()))


def test_files_that_are_not_state_dicts_are_refused(tmp_path):
    whole = io.BytesIO()
    torch.save(tv.mobilenet_v3_small(num_classes=10), whole)  # the model object: needs unpickling code
    with pytest.raises(WeightsError, match="weights_only=True"):
        read_state_dict(whole.getvalue())
    with pytest.raises(WeightsError, match="not a tensor"):
        read_state_dict(saved({"a": torch.zeros(1), "epoch": 3}, "pt", tmp_path))  # type: ignore[dict-item]
    with pytest.raises(WeightsError, match="safetensors"):
        header = b'{"a": broken}'
        read_state_dict(len(header).to_bytes(8, "little") + header)
    with pytest.raises(WeightsError, match="safetensors.*expected a state dict"):
        read_state_dict(len(b"{}").to_bytes(8, "little") + b"{}")  # a valid safetensors file with no tensor
    for junk in (b"abc", b"\x80\x02}q", b"\x80\x04\x95\x10"):  # the unpickler fails in other ways on these
        with pytest.raises(WeightsError, match="weights_only=True"):
            read_state_dict(junk)
    checkpoint = {"state_dict": {"w": torch.ones(2)}, "epoch": torch.tensor(3)}
    assert list(read_state_dict(saved(checkpoint, "pt", tmp_path))) == ["w"]  # a training checkpoint unwrapped


def test_the_cache_key_follows_the_weights_content(tmp_path, digits16):
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(user_model("resnet18").state_dict(), first)
    torch.save(trained_looking(user_model("resnet18"), seed=1).state_dict(), second)
    spec = SearchSpec("resnet18", "digits", macs=[1], input_size=16, width_mult=0.25)
    keys = {supernet_key(replace(spec, weights=str(path)), digits16) for path in (first, second)}
    assert len(keys) == 2 and supernet_key(spec, digits16) not in keys
    copy = tmp_path / "copy.pt"
    copy.write_bytes(first.read_bytes())
    assert supernet_key(replace(spec, weights=str(copy)), digits16) == supernet_key(
        replace(spec, weights=str(first)), digits16
    )
    assert file_sha256(copy) == file_sha256(first)


def test_a_pretrained_start_defaults_to_the_short_recipe():
    spec = SearchSpec.from_dict({"arch": "resnet18", "dataset": "digits", "weights": "w.pt", "train": {"epochs": 5}})
    assert (spec.train.epochs, spec.train.lr, spec.train.warmup_epochs) == (5, PRETRAINED_TRAIN["lr"], 0.0)
    scratch = SearchSpec.from_dict({"arch": "resnet18", "dataset": "digits"})
    assert scratch.train == TrainSpec() and PRETRAINED_TRAIN["lr"] < TrainSpec.lr
    assert PRETRAINED_TRAIN["epochs"] < TrainSpec.epochs


def test_the_loaded_network_teaches_the_narrower_widths_from_the_first_step():
    """Inplace distillation's teacher is the full width, so from the first sandwich step the
    students learn the user's trained model's predictions (not a fresh network's)."""
    model = user_model("resnet18").train()  # BN on the batch's statistics, as in a training step
    supernet = build_for_mode("resnet18", "usnet-nonuniform", 10, 16, 0.25)
    load_initial_weights(supernet, model.state_dict())
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16, generator=gen), torch.randint(10, (8,), generator=gen)
    outputs = []

    def keep(_module, _inputs, out):
        outputs.append(out)
        out.register_hook(lambda grad: outputs.append(grad.clone()))

    supernet.register_forward_hook(keep)
    sandwich_step(
        supernet,
        [Member(supernet.space.full()), Member(supernet.space.smallest())],
        x,
        y,
        TrainSpec(),
        torch.device("cpu"),
    )
    teacher, student, student_grad = outputs[0], outputs[2], outputs[3]  # each member: forward, then backward
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(teacher.detach(), expected, rtol=1e-5, atol=1e-5)
    # soft cross-entropy against the user's model: d/dlogits = (softmax(student) - softmax(teacher)) / N
    torch.testing.assert_close(
        student_grad, (student.detach().softmax(1) - expected.softmax(1)) / len(y), rtol=1e-4, atol=1e-6
    )
