"""``autoslim archs | macs | export``: output users script against, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch

import models
from app.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err


def test_archs_lists_every_registered_architecture(capsys):
    code, out, _ = run(capsys, "archs")
    lines = out.splitlines()
    assert code == 0 and lines[: len(models.list_archs())] == models.list_archs()
    assert "torchvision:mobilenet_v3_small" in lines and any(line.startswith("timm:NAME") for line in lines)


def test_macs_json_prints_the_published_figures(capsys):
    code, out, _ = run(capsys, "macs", "mobilenet_v2", "--input-size", "224", "--num-classes", "1000", "--json")
    result = json.loads(out)
    assert code == 0 and set(result) == {"macs", "params"}
    assert isinstance(result["macs"], int) and isinstance(result["params"], int)
    assert result["macs"] == pytest.approx(300e6, rel=0.01) and result["params"] == pytest.approx(3.5e6, rel=0.01)


def test_macs_follows_width_and_input_size(capsys):
    _, out, _ = run(
        capsys, "macs", "resnet18", "--input-size", "32", "--num-classes", "10", "--width-mult", "0.5", "--json"
    )
    supernet = models.build_supernet("resnet18", num_classes=10, input_size=32, width_mult=0.5)
    space = supernet.space
    full = space.full()
    assert json.loads(out) == {"macs": models.count_macs(space, full), "params": models.count_params(space, full)}
    code, out, _ = run(capsys, "macs", "resnet18", "--input-size", "32", "--num-classes", "10", "--width-mult", "0.5")
    assert code == 0 and "MACs:" in out and "params:" in out


def test_macs_of_a_config_file(capsys, tiny_config):
    config, path = tiny_config("mobilenet_v1", seed=5)
    code, out, _ = run(capsys, "macs", "--config", str(path), "--json")
    assert code == 0 and json.loads(out) == {"macs": config.macs, "params": config.params}
    assert_one_line_error(*run(capsys, "macs", "resnet50", "--config", str(path)), "config is for 'mobilenet_v1'")


def test_bad_inputs_exit_non_zero_with_one_line(capsys, tiny_config, tmp_path):
    assert_one_line_error(*run(capsys, "macs", "vgg16"), "unknown architecture 'vgg16'")
    assert_one_line_error(*run(capsys, "macs"), "give an architecture or --config")
    malformed = tmp_path / "malformed.json"
    malformed.write_text("{not json")
    assert_one_line_error(*run(capsys, "macs", "--config", str(malformed)), "not valid JSON")
    assert_one_line_error(*run(capsys, "macs", "--config", str(tmp_path / "missing.json")), "does not exist")
    config, path = tiny_config("resnet18")
    data = json.loads(path.read_text())
    group = models.Supernet(config.net).space.groups["layer2.0.conv1"]
    data["channels"]["layer2.0.conv1"] = group.max - 1  # within bounds, off the grid
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps(data))
    assert_one_line_error(
        *run(capsys, "macs", "--config", str(invalid)), "layer 'layer2.0.conv1'", "not a multiple of 8"
    )
    onnx_out, h5_out = str(tmp_path / "m.onnx"), str(tmp_path / "m.h5")
    assert_one_line_error(*run(capsys, "export", "--config", str(invalid), "--out", onnx_out), "layer2.0.conv1")
    assert_one_line_error(*run(capsys, "export", "--config", str(path), "--out", h5_out), "unknown model format")
    not_a_checkpoint = tmp_path / "junk.pt"
    not_a_checkpoint.write_bytes(b"junk")
    assert_one_line_error(
        *run(
            capsys,
            "export",
            "--config",
            str(path),
            "--out",
            str(tmp_path / "m.pt"),
            "--checkpoint",
            str(not_a_checkpoint),
        ),
        "cannot be loaded",
    )


def test_a_user_error_from_the_real_command_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "macs", "vgg16"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        "autoslim macs: error: unknown architecture 'vgg16'; choose from " + ", ".join(models.list_archs())
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")  # jit / legacy ONNX exporter
def test_export_writes_loadable_models_in_every_format(capsys, tiny_config, tmp_path):
    """Same seed, same fresh weights: the .pt, .ts and .onnx files must compute the same logits."""
    config, path = tiny_config("mobilenet_v2", seed=6)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for ext in (".pt", ".ts", ".onnx"):
        torch.manual_seed(0)
        code, out, _ = run(capsys, "export", "--config", str(path), "--out", str(tmp_path / f"slim{ext}"))
        assert code == 0 and f"slim{ext}" in out
    reloaded = torch.load(tmp_path / "slim.pt", weights_only=False)
    assert sum(p.numel() for p in reloaded.parameters()) == config.params
    with torch.no_grad():
        outputs["pt"] = reloaded(x).numpy()
        outputs["ts"] = torch.jit.load(str(tmp_path / "slim.ts"))(x).numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "slim.onnx"), providers=["CPUExecutionProvider"])
    outputs["onnx"] = session.run(None, {"input": x.numpy()})[0]
    assert outputs["pt"].shape == (2, 10) and np.abs(outputs["pt"]).max() > 1e-3
    np.testing.assert_allclose(outputs["ts"], outputs["pt"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(outputs["onnx"], outputs["pt"], atol=1e-4, rtol=0)


def test_export_takes_the_weights_of_a_checkpoint(capsys, tiny_config, tmp_path, randomise_bn):
    config, path = tiny_config("resnet18", seed=7)
    supernet = randomise_bn(models.Supernet(config.net), torch.Generator().manual_seed(1))
    checkpoint = tmp_path / "supernet.pt"
    torch.save({"model": supernet.state_dict(), "epoch": 3}, checkpoint)
    argv = ["export", "--config", str(path), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "s.pt")]
    assert run(capsys, *argv)[0] == 0
    x = torch.randn(2, 3, 32, 32)
    expected = models.export_slim(supernet, config.widths(supernet))
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "s.pt", weights_only=False)(x), expected(x), atol=1e-5, rtol=0)
    other, _ = tiny_config("mobilenet_v1")
    torch.save({"model": models.Supernet(other.net).state_dict()}, checkpoint)
    assert_one_line_error(*run(capsys, *argv), "cannot be loaded")
