"""The original network as a frozen teacher: of the supernet's narrower widths, and of a fine-tuned slim model."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from engine.retrain import DISTILL_WEIGHT, distillation_loss, retrain
from engine.sampling import Member
from engine.search_job import run_search
from engine.spec import SearchSpec, TrainSpec
from engine.train import build_for_mode, frozen_copy, sandwich_step, soft_cross_entropy, train_supernet
from models import export_slim

SPEC = TrainSpec(mode="usnet-nonuniform", epochs=1, batch_size=32, lr=0.05, warmup_epochs=0.0)


def _net():
    return build_for_mode("resnet18", "usnet-nonuniform", num_classes=10, input_size=16, width_mult=0.25, seed=3)


def _state(net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_students_learn_the_original_networks_predictions_and_the_full_width_the_labels():
    net = _net()
    teacher = frozen_copy(net)
    with torch.no_grad():  # the live network drifts away from the original
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16, generator=gen), torch.randint(10, (8,), generator=gen)
    small = net.space.smallest()
    members = [Member(net.space.full()), Member(small)]
    net.zero_grad()
    loss = sandwich_step(net, members, x, y, SPEC, torch.device("cpu"), teacher=teacher)
    got = net.net.fc.weight.grad.clone()
    net.zero_grad()
    net.set_full()
    full_logits = net(x)
    F.cross_entropy(full_logits, y).backward()
    net.set_widths(small)
    with torch.no_grad():
        targets = teacher(x).softmax(1)
    soft_cross_entropy(net(x), targets).backward()
    assert torch.allclose(got, net.net.fc.weight.grad, atol=1e-6)
    assert loss == pytest.approx(F.cross_entropy(full_logits, y).item(), rel=1e-6)
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_original_keeps_the_start_frozen_and_trains_other_weights(tiny, tmp_path):
    start = _net()
    original = _state(start)
    runs = {}
    for teacher in ("full", "original"):
        net = copy.deepcopy(start)
        train_supernet(net, tiny, replace(SPEC, teacher=teacher), tmp_path / teacher, seed=1)
        runs[teacher] = net
    changed = max((runs["original"].state_dict()[k].float() - original[k].float()).abs().max().item() for k in original)
    assert changed > 1e-3  # it trained
    differs = max(
        (runs["original"].state_dict()[k].float() - runs["full"].state_dict()[k].float()).abs().max().item()
        for k in original
    )
    assert differs > 1e-4  # and the teacher made a difference to what it learned
    with pytest.raises(ValueError, match="unknown teacher 'ema'"):
        train_supernet(_net(), tiny, replace(SPEC, teacher="ema"), tmp_path / "bad", seed=1)


def test_teacher_original_needs_weights_to_start_from(tmp_path):
    spec = SearchSpec.from_dict(
        {
            "arch": "resnet18",
            "dataset": "digits",
            "input_size": 16,
            "width_mult": 0.25,
            "macs": ["50%"],
            "train": {"epochs": 1, "teacher": "original"},
        }
    )
    with pytest.raises(ValueError, match="needs trained weights"):
        run_search(spec, tmp_path / "job")


def test_pretrained_defaults_distil_from_the_original():
    spec = SearchSpec.from_dict({"arch": "resnet18", "dataset": "digits", "weights": "w.pt"})
    assert spec.train.teacher == "original"
    assert SearchSpec.from_dict({"arch": "resnet18", "dataset": "digits"}).train.teacher == "full"


def test_distilled_fine_tuning_leaves_the_teacher_and_changes_what_the_student_learns(tiny):
    teacher_net = _net()
    teacher = export_slim(teacher_net)
    before = _state(teacher)
    student = export_slim(teacher_net, teacher_net.space.uniform(0.5))
    recipe = TrainSpec(batch_size=32)
    plain = retrain(copy.deepcopy(student), tiny, recipe, 1, 0.05, seed=0, device="cpu")
    distilled = retrain(copy.deepcopy(student), tiny, recipe, 1, 0.05, seed=0, device="cpu", teacher=teacher)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert any(
        not torch.allclose(a, b, atol=1e-5)
        for a, b in zip(plain.model.state_dict().values(), distilled.model.state_dict().values())
    )
    x = torch.randn(4, 3, 16, 16)
    logits = student.eval()(x)
    expected = soft_cross_entropy(logits, teacher.eval()(x).softmax(1))
    assert distillation_loss(logits, teacher, x, torch.device("cpu")).item() == pytest.approx(expected.item(), rel=1e-6)
    assert 0 < DISTILL_WEIGHT < 1


def test_a_converted_torchvision_network_is_copied_as_its_own_teacher():
    """A converted MobileNetV3's traced channel space is too deep to deep-copy (it recursed past
    Python's limit and failed every search from uploaded MobileNetV3 weights): the teacher shares
    the space and owns its weights."""
    import torchvision

    import models

    torch.manual_seed(0)
    net = models.convert(torchvision.models.mobilenet_v3_small(num_classes=10), 32).eval()
    teacher = frozen_copy(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(teacher(x), net(x))
        next(net.parameters()).add_(1.0)  # the live network moves; the teacher does not
        assert not torch.equal(teacher(x), net(x))
    assert teacher.space is net.space and not any(p.requires_grad for p in teacher.parameters())
