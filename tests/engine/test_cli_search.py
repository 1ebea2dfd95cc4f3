"""``autoslim search`` and ``autoslim retrain`` from the command line, with the configs they write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from app.cli.search_cmds import width_accuracy
from engine.latency import LatencyTable, measure_table
from engine.latency_runtimes import Timing, TorchRuntime
from engine.spec import SearchResult, UniformPoint
from models import build_supernet

# The recipe of test_run_search.SPEC: with the same cache folder, one supernet serves both modules.
FLAGS = [
    "--arch",
    "resnet18",
    "--dataset",
    "digits",
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--lr",
    "0.05",
    "--input-size",
    "16",
    "--width-mult",
    "0.25",
    "--bins",
    "4",
    "--calib-size",
    "128",
    "--score-size",
    "128",
]


@pytest.fixture
def caches(cache_root, monkeypatch) -> Path:
    root = cache_root
    monkeypatch.setenv("AUTOSLIM_SUPERNET_CACHE", str(root / "supernets"))
    monkeypatch.setenv("AUTOSLIM_LATENCY_CACHE", str(root / "latency"))
    return root


def test_search_prints_a_table_and_writes_configs_the_other_commands_accept(caches, tmp_path, capsys):
    out = tmp_path / "job"
    assert main(["search", *FLAGS, "--macs", "7M,6.5M", "--params", "400k", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert len(result["budgets"]) == 3
    for budget, label in zip(result["budgets"], ("7M MACs", "6.5M MACs", "400k params")):
        config = out / budget["files"]["config"]
        row = next(line for line in printed.splitlines() if line.strip().startswith(label))
        assert f"{budget['macs'] / 1e6:.3f}M" in row and f"{budget['val_accuracy']:.2f}%" in row and str(config) in row
        width = width_accuracy(SearchResult.from_dict(result).uniform, budget["macs"])  # the width multiplier beside it
        assert f"{width:.2f}% {budget['val_accuracy'] - width:+7.2f}" in row
        assert main(["macs", "--config", str(config), "--json"]) == 0
        counted = json.loads(capsys.readouterr().out)
        assert counted == {"macs": budget["macs"], "params": budget["params"]}
        assert counted[budget["kind"]] <= budget["target"]
    config = out / result["budgets"][1]["files"]["config"]
    assert (
        main(
            [
                "export",
                "--config",
                str(config),
                "--out",
                str(tmp_path / "slim.onnx"),
                "--checkpoint",
                result["supernet"]["path"],
            ]
        )
        == 0
    )
    assert (tmp_path / "slim.onnx").stat().st_size > 0
    capsys.readouterr()
    retrained = tmp_path / "retrained"
    assert (
        main(
            [
                "retrain",
                "--config",
                str(config),
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--batch-size",
                "64",
                "--checkpoint",
                result["supernet"]["path"],
                "--calib-size",
                "128",
                "--out",
                str(retrained),
            ]
        )
        == 0
    )
    accuracy = json.loads((retrained / "retrain.json").read_text())["test_accuracy"]
    assert f"test accuracy: {accuracy:.2f}%" in capsys.readouterr().out
    assert json.loads((retrained / "config.json").read_text())["accuracy"] == accuracy


def test_width_accuracy_is_interpolated_between_the_measured_uniform_widths():
    uniform = [
        UniformPoint(ratio, int(macs), 0, accuracy, 0.0)
        for ratio, macs, accuracy in ((1.0, 4e6, 80.0), (0.5, 1e6, 50.0), (0.75, 2e6, 70.0))
    ]
    assert width_accuracy(uniform, 1.5e6) == pytest.approx(60.0)
    assert width_accuracy(uniform, 3e6) == pytest.approx(75.0)
    assert width_accuracy(uniform, 2e6) == pytest.approx(70.0)
    assert width_accuracy(uniform, 0.5e6) is None and width_accuracy([], 2e6) is None


def test_budgets_as_shares_of_the_full_network(caches, tmp_path, capsys):
    out = tmp_path / "job"
    assert main(["search", *FLAGS, "--macs", "80%", "--params", "90%", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    full = result["full"]
    assert [(b["kind"], b["target"]) for b in result["budgets"]] == [
        ("macs", 0.8 * full["macs"]),
        ("params", 0.9 * full["params"]),
    ]
    assert all(b[b["kind"]] <= b["target"] for b in result["budgets"])
    assert "7.01M MACs" in capsys.readouterr().out  # the table names the budget's amount


def test_an_infeasible_budget_is_one_line_with_the_range(caches, tmp_path, capsys):
    assert main(["search", *FLAGS, "--macs", "1k", "--out", str(tmp_path / "job")]) == 2
    err = capsys.readouterr().err
    assert "autoslim search: error: 1k MACs is below the smallest configuration; feasible range is" in err
    assert "Traceback" not in err


def test_search_of_a_torchvision_network_by_name(caches, tmp_path, capsys):
    """``--arch torchvision:NAME``: a network autoslim has no code for, converted and searched."""
    out = tmp_path / "mv3"
    flags = [
        "--arch",
        "torchvision:mobilenet_v3_small",
        "--dataset",
        "digits",
        "--input-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--bins",
        "4",
        "--calib-size",
        "64",
        "--score-size",
        "64",
    ]
    assert main(["search", *flags, "--macs", "1.9M", "--out", str(out)]) == 0
    answer = json.loads((out / "result.json").read_text())["budgets"][0]
    assert answer["macs"] <= 1.9e6 < json.loads((out / "result.json").read_text())["full"]["macs"]
    capsys.readouterr()
    assert main(["macs", "--config", str(out / answer["files"]["config"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == answer["macs"]


# ---- latency budgets on another device (`autoslim profile` tables) --------------------------------
@pytest.fixture(scope="module")
def device_table(tmp_path_factory) -> Path:
    """A table of the searched network (ResNet-18 x0.25 at 16 px, every step of 4-bin ladders), named
    for a device of its own, as `autoslim profile --bins 4 --device-name 'test board'` writes it."""
    net = build_supernet("resnet18", 10, 16, 0.25)
    table = measure_table(
        net,
        TorchRuntime("cpu", threads=1),
        bins=4,
        max_levels=None,
        timing=Timing(blocks=2, block_s=0.0002, warmup=1),
        fit_configs=2,
    )
    table.key["device"] = "test board"
    return table.save(tmp_path_factory.mktemp("device") / "table.json")


def test_latency_budgets_on_a_device_table_are_predicted_and_labelled_with_its_device(
    caches, device_table, tmp_path, capsys
):
    table, space = LatencyTable.load(device_table), build_supernet("resnet18", 10, 16, 0.25).space
    low, high = table.predict(space.smallest()), table.predict(space.full())
    target = round(low + 0.3 * (high - low), 4)
    out = tmp_path / "job"
    assert (
        main(["search", *FLAGS, "--latency-ms", str(target), "--latency-table", str(device_table), "--out", str(out)])
        == 0
    )
    result = json.loads((out / "result.json").read_text())
    (answer,) = result["budgets"]
    assert answer["latency_ms"] <= target
    assert answer["latency_ms"] == round(table.predict(space.from_layers(answer["channels"])), 6)
    assert answer["latency_device"] == "test board" and answer["latency_runtime"] == table.describe()["runtime"]
    assert answer["worker_latency_ms"] > 0 and answer["worker_latency_device"] != "test board"
    config = json.loads((out / answer["files"]["config"]).read_text())
    assert {k: config[k] for k in answer if "latency" in k} == {k: v for k, v in answer.items() if "latency" in k}
    for step in result["trajectory"]:
        assert step["latency_ms"] == round(table.predict(step["widths"]), 6)
    printed = capsys.readouterr().out
    assert f"latency on test board, {table.describe()['runtime']}" in printed
    assert f"{answer['worker_latency_ms']:.3f}ms" in printed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ["--input-size", "32"],
            "latency table key.net.input_size: the table is for input_size 16, the search runs 32",
        ),
        (
            ["--bins", "8"],
            "which a search with 8 bins visits (the table was profiled with 4 bins); profile with --bins 8",
        ),
        (["--mode", "mutual"], "a latency table describes one input size; a MutualNet search spans several"),
    ],
)
def test_a_table_that_does_not_fit_the_search_is_one_line_before_any_training(
    caches, device_table, tmp_path, capsys, change, message
):
    flags = [*FLAGS, *change]  # argparse keeps the last of a repeated option
    assert (
        main(
            [
                "search",
                *flags,
                "--latency-ms",
                "1",
                "--latency-table",
                str(device_table),
                "--out",
                str(tmp_path / "job"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "job" / "search_state.json").exists()


def test_a_truncated_table_file_is_one_line(caches, device_table, tmp_path, capsys):
    cut = tmp_path / "cut.json"
    cut.write_bytes(device_table.read_bytes()[:1000])
    assert (
        main(["search", *FLAGS, "--latency-ms", "1", "--latency-table", str(cut), "--out", str(tmp_path / "job")]) == 2
    )
    assert "latency table file: not a complete JSON document" in capsys.readouterr().err


def test_search_options_set_the_network_shape_width_min_and_divisor_included():
    from app.cli import build_parser
    from app.cli.search_cmds import search_spec

    args = build_parser().parse_args(
        ["search", *FLAGS, "--macs", "50%", "--out", "unused", "--width-min", "0.5", "--divisor", "4"]
    )
    network = search_spec(args).network(num_classes=10)
    assert network == {
        "arch": "resnet18",
        "num_classes": 10,
        "input_size": 16,
        "width_mult": 0.25,
        "divisor": 4,
        "width_min": 0.5,
    }
    groups = build_supernet(**network).space.groups.values()
    assert [(g.min, g.max, g.divisor) for g in groups][::3] == [(8, 16, 4), (16, 32, 4), (32, 64, 4), (64, 128, 4)]
