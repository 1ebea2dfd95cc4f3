"""Supernet training mechanics: the step, determinism, checkpoints, resume and cancel."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from engine.checkpoint import CheckpointError, load_checkpoint
from engine.optim import lr_factor, make_optimizer
from engine.sampling import Member, WidthSampler, default_resolutions, snet_switches
from engine.spec import Cancelled, TrainSpec
from engine.train import build_for_mode, epoch_batches, load_supernet, sandwich_step, train_supernet

SPEC = TrainSpec(mode="usnet-nonuniform", epochs=2, batch_size=32, lr=0.05, warmup_epochs=1.0)


def _net(mode: str = "usnet-nonuniform", arch: str = "resnet18"):
    return build_for_mode(arch, mode, num_classes=10, input_size=16, width_mult=0.25)


def _same_weights(a, b, atol=0.0) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k].float(), sb[k].float(), atol=atol, rtol=0) for k in sa)


def test_teacher_gets_no_gradient_from_the_students():
    """The full network's logits receive exactly the gradient of its own label loss."""
    net = _net()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16, generator=gen), torch.randint(10, (8,), generator=gen)
    space = net.space
    members = [Member(space.full()), Member(space.smallest()), Member(space.random(gen)), Member(space.uniform(0.5))]
    seen = []

    def keep_teacher_grad(_module, _inputs, out):
        if not seen:
            seen.append(out)
            out.register_hook(lambda grad: seen.append(grad.clone()))

    net.register_forward_hook(keep_teacher_grad)  # ResNet-18 has no dropout: forwards are deterministic
    loss = sandwich_step(net, members, x, y, SPEC, torch.device("cpu"))
    teacher_logits, teacher_grad = seen[0].detach(), seen[1]
    expected = (teacher_logits.softmax(1) - F.one_hot(y, 10)) / len(y)
    assert torch.allclose(teacher_grad, expected, atol=1e-6)
    assert loss == pytest.approx(F.cross_entropy(teacher_logits, y).item(), rel=1e-6)
    # The students did contribute to the shared weights: a teacher-only step gives other gradients.
    with_students = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    sandwich_step(net, members[:1], x, y, SPEC, torch.device("cpu"))
    assert any(not torch.allclose(a, p.grad) for a, p in zip(with_students, net.parameters()))


def test_without_distillation_every_member_learns_the_labels():
    net = _net()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 16, 16, generator=gen), torch.randint(10, (8,), generator=gen)
    members = [Member(net.space.full()), Member(net.space.smallest())]
    grads = {}
    for distill in (True, False):
        net.zero_grad()
        sandwich_step(net, members, x, y, replace(SPEC, inplace_distill=distill), torch.device("cpu"))
        grads[distill] = net.net.fc.weight.grad.clone()
    net.zero_grad()
    net.set_widths(net.space.full())
    F.cross_entropy(net(x), y).backward()
    net.set_widths(net.space.smallest())
    F.cross_entropy(net(x), y).backward()
    assert torch.allclose(grads[False], net.net.fc.weight.grad, atol=1e-6)
    assert not torch.allclose(grads[True], grads[False], atol=1e-4)


def test_sampler_members_per_mode():
    sampler = WidthSampler(_net(), "usnet-nonuniform", num_sandwich=4, seed=0)
    space = sampler.space
    members = sampler.members()
    assert len(members) == 4 and members[0].widths == space.full() and members[1].widths == space.smallest()
    nonuniform = [m.widths for _ in range(5) for m in sampler.members()[2:]]
    assert any(w not in [space.uniform(r / 40) for r in range(10, 41)] for w in nonuniform)
    usnet = WidthSampler(_net("usnet"), "usnet", num_sandwich=5, seed=0).members()
    assert len(usnet) == 5 and all(m.resolution is None for m in usnet)
    mutual = WidthSampler(_net("mutual"), "mutual", seed=0)
    sizes = {m.resolution for _ in range(20) for m in mutual.members()[1:]}
    assert sizes == {None, 12, 8} and default_resolutions(16) == [16, 12, 8]  # 16 * (1, 7/8, 6/8, 5/8) -> x4
    assert all(m.members()[0].resolution is None for m in [mutual])
    snet = _net("snet")
    assert snet.spec.switches == snet_switches(0.25) == (0.25, 0.5, 0.75, 1.0)
    assert [m.widths for m in WidthSampler(snet, "snet").members()] == [
        snet.space.uniform(r) for r in (1.0, 0.75, 0.5, 0.25)
    ]
    with pytest.raises(ValueError, match="needs a supernet with switchable BN"):
        WidthSampler(_net(), "snet")
    with pytest.raises(ValueError, match="unknown training mode"):
        build_for_mode("mobilenet_v1", "fancy", 10)


def test_schedule_and_weight_decay_groups():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1) and lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0) and lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    net = _net()
    decay, no_decay = make_optimizer(net, SPEC).param_groups
    assert decay["weight_decay"] == SPEC.weight_decay and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))
    assert decay["nesterov"]


def test_epoch_batches_are_a_function_of_seed_and_epoch():
    a, b = epoch_batches(100, 32, seed=0, epoch=1), epoch_batches(100, 32, seed=0, epoch=1)
    assert a == b and len(a) == 3 and all(len(batch) == 32 for batch in a)
    assert a != epoch_batches(100, 32, seed=0, epoch=2) and a != epoch_batches(100, 32, seed=1, epoch=1)
    assert len({i for batch in a for i, _ in batch}) == 96
    assert epoch_batches(10, 32, 0, 0) and len(epoch_batches(10, 32, 0, 0)[0]) == 10


@pytest.mark.parametrize("mode", ["snet", "usnet", "usnet-nonuniform", "mutual"])
def test_each_mode_trains_and_the_loss_drops(mode, tiny, tmp_path):
    net = _net(mode)
    events = []
    spec = replace(SPEC, mode=mode, epochs=6)
    final = train_supernet(net, tiny, spec, tmp_path, report=events.append)
    losses = [e["loss"] for e in events]
    assert losses[-1] < 0.8 * losses[0], losses
    last = events[-1]
    assert last["phase"] == "train" and last["percent"] == pytest.approx(100.0) and last["step"] == 48
    assert (
        (last["epoch"], last["epochs"]) == (6, 6)
        and last["images_per_s"] > 0
        and last["eta_s"] == pytest.approx(0.0, abs=1e-6)
    )
    loaded = load_supernet(final)
    assert loaded.spec == net.spec and _same_weights(loaded, net)


def test_same_seed_same_weights_other_seed_other_weights(tiny, tmp_path):
    nets = [_net() for _ in range(3)]
    for i, (net, seed) in enumerate(zip(nets, (3, 3, 4))):
        train_supernet(net, tiny, replace(SPEC, epochs=1), tmp_path / str(i), seed=seed)
    assert _same_weights(nets[0], nets[1]) and not _same_weights(nets[0], nets[2], atol=1e-6)


def _stop_after(steps: int):
    calls = iter(range(10**9))
    return lambda: next(calls) + 1 >= steps


RESUME_SPEC = replace(SPEC, mode="mutual")


@pytest.fixture(scope="module")
def straight_run(tiny, tmp_path_factory):
    """2 epochs without a stop.  MobileNetV2's dropout and MutualNet's resolutions use every generator."""
    net = _net("mutual", "mobilenet_v2")
    train_supernet(net, tiny, RESUME_SPEC, tmp_path_factory.mktemp("straight"), seed=1)
    return net


@pytest.mark.parametrize("stop_at", [8, 3], ids=["epoch-boundary", "mid-epoch"])
def test_resume_gives_the_weights_of_an_uninterrupted_run(stop_at, straight_run, tiny, tmp_path):
    """2 epochs straight vs stopping (after 1 epoch, or mid-epoch) and resuming in a new supernet."""
    spec = RESUME_SPEC
    stopped = _net("mutual", "mobilenet_v2")
    with pytest.raises(Cancelled):
        train_supernet(stopped, tiny, spec, tmp_path / "resumed", seed=1, should_cancel=_stop_after(stop_at))
    state = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert (state["step"], state["finished"]) == (stop_at, False) and not (tmp_path / "resumed" / "final.pt").exists()
    torch.manual_seed(123)  # the resumed run must not depend on the caller's global generator
    resumed = _net("mutual", "mobilenet_v2")
    train_supernet(resumed, tiny, spec, tmp_path / "resumed", seed=1)
    assert _same_weights(straight_run, resumed, atol=1e-5)
    assert load_checkpoint(tmp_path / "resumed" / "final.pt")["step"] == 16


def test_finished_run_is_not_retrained_and_other_runs_are_refused(tiny, tmp_path):
    net = _net()
    final = train_supernet(net, tiny, replace(SPEC, epochs=1), tmp_path)
    again = _net()
    assert (
        train_supernet(again, tiny, replace(SPEC, epochs=1), tmp_path, report=lambda e: pytest.fail("trained")) == final
    )
    assert _same_weights(net, again)
    with pytest.raises(CheckpointError, match="different run .*epochs was 1, now 2"):
        train_supernet(_net(), tiny, SPEC, tmp_path)
    with pytest.raises(CheckpointError, match="different run .*seed"):
        train_supernet(_net(), tiny, replace(SPEC, epochs=1), tmp_path, seed=5)


def test_timed_checkpoints_are_written_atomically(tiny, tmp_path):
    net = _net()
    written = []
    steps = iter(range(100))

    def watch() -> bool:
        next(steps)
        written.append((tmp_path / "last.pt").exists())
        return False

    train_supernet(net, tiny, replace(SPEC, epochs=1), tmp_path, should_cancel=watch, checkpoint_every_s=0.0)
    assert written[1] and not list(tmp_path.glob("*.tmp"))  # a checkpoint after the very first step


def test_load_supernet_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_supernet(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_supernet(tmp_path / "junk.pt")
