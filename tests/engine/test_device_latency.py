"""Latency tables for the device a model is deployed to: ONNX Runtime timing, fused units, the table
file and its checks, and ``autoslim profile`` with nothing of the service installed.

Tiny networks at 8 px and few bins; no timing bounds (the accuracy of predictions is measured by
``bench/bench_device_latency.py``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from engine.latency import LatencyTable, measure_table, node_axes, runnable_nodes, units
from engine.latency_check import TableError, check_graph, check_search, read_table, table_network
from engine.latency_runtimes import OnnxRuntime, Timing, TorchRuntime
from engine.partial_forward import PartialForward
from models import build_supernet

FAST = Timing(blocks=2, block_s=0.0002, warmup=1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def resnet():
    return build_supernet("resnet18", 10, 8, 0.25).eval()


@pytest.fixture(scope="module")
def ort_table(resnet) -> LatencyTable:
    return measure_table(resnet, OnnxRuntime(threads=1), batch_size=1, bins=4, max_levels=2, timing=FAST, fit_configs=2)


@pytest.fixture(scope="module")
def mobilenet():
    return build_supernet("mobilenet_v2", 10, 8, 0.35).eval()


@pytest.fixture(scope="module")
def torch_table(mobilenet) -> LatencyTable:
    """Every width of 2-bin ladders (what `autoslim profile --bins 2` writes), timed by eager torch."""
    return measure_table(mobilenet, TorchRuntime("cpu", threads=1), bins=2, max_levels=None, timing=FAST, fit_configs=2)


def test_units_run_a_conv_with_its_bn_activation_and_residual_addition(resnet):
    graph = PartialForward(resnet)
    nodes = runnable_nodes(graph)
    assert all(members == [head] for head, members in units(graph, nodes, fuses=False).items())
    fused = {head.name: [m.name for m in members] for head, members in units(graph, nodes, fuses=True).items()}
    assert fused["conv1"] == ["conv1", "bn1", "relu"]
    assert fused["layer1_0_conv2"] == ["layer1_0_conv2", "layer1_0_bn2", "add", "layer1_0_relu_1"]
    # An addition joins the first conv that reaches it; the shortcut's conv keeps only its BN.
    assert fused["layer2_0_conv2"] == ["layer2_0_conv2", "layer2_0_bn2", "add_2", "layer2_0_relu_1"]
    assert fused["layer2_0_downsample_0"] == ["layer2_0_downsample_0", "layer2_0_downsample_1"]
    assert sorted(n for members in fused.values() for n in members) == sorted(n.name for n in nodes)


def test_onnxruntime_table_records_its_runtime_and_times_fused_nodes_inside_their_conv(resnet, ort_table):
    import onnxruntime

    key = ort_table.key
    assert (key["runtime"], key["version"], key["provider"], key["threads"]) == (
        "onnxruntime",
        onnxruntime.__version__,
        "CPUExecutionProvider",
        1,
    )
    assert key["batch_size"] == 1 and key["bins"] == 4 and key["device"] and key["net"]["arch"] == "resnet18"
    graph = PartialForward(resnet)
    assert set(ort_table.nodes) == {n.name for n in runnable_nodes(graph)}
    for node in runnable_nodes(graph):
        assert ort_table.nodes[node.name].axes == node_axes(graph, node)
    widths = resnet.space.full()
    assert ort_table.nodes["layer1_0_bn2"].at(widths) == ort_table.nodes["add"].at(widths) == 0.0
    assert ort_table.nodes["layer1_0_conv2"].at(widths) > 0 and ort_table.nodes["pool"].at(widths) > 0
    assert ort_table.predict(resnet.space.smallest()) > 0
    assert ort_table.describe() == {
        "device": key["device"],
        "runtime": f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider, 1 thread, batch 1)",
    }


def test_a_table_file_reads_back_as_the_same_table(resnet, ort_table):
    again = read_table(json.dumps(ort_table.to_dict()).encode())
    assert again == ort_table
    check_graph(again, table_network(again))


def damaged(table: LatencyTable, change) -> bytes:
    data = json.loads(json.dumps(table.to_dict()))
    change(data)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        (lambda d: d.update(format="autoslim.latency-table/2"), ("format",), "write the table with"),
        (lambda d: d["key"].pop("threads"), ("key", "threads"), "is missing"),
        (lambda d: d.update(scale=0), ("scale",), "must be positive"),
        (
            lambda d: d["nodes"]["layer1_0_conv1"].update(ms=[[1.0, -2.0], [1.0, 1.0]]),
            ("nodes", "layer1_0_conv1", "ms", 0, 1),
            "non-negative",
        ),
        (
            lambda d: d["nodes"]["layer1_0_conv1"].update(ms=[1.0, 2.0]),
            ("nodes", "layer1_0_conv1", "ms", 0),
            "list of 2 entries",
        ),
        (
            lambda d: d["nodes"]["layer1_0_conv1"]["levels"][0].reverse(),
            ("nodes", "layer1_0_conv1", "levels", 0),
            "ascending",
        ),
    ],
)
def test_a_damaged_table_names_the_part_at_fault(ort_table, change, loc, message):
    with pytest.raises(TableError) as err:
        read_table(damaged(ort_table, change))
    assert err.value.loc == loc and message in err.value.message


def test_a_truncated_file_says_so(ort_table):
    raw = json.dumps(ort_table.to_dict()).encode()
    with pytest.raises(TableError, match=r"not a complete JSON document .* a truncated or damaged file"):
        read_table(raw[: len(raw) // 2])


def test_a_table_must_hold_every_node_of_its_network_over_its_counts(resnet, ort_table):
    def missing(d):
        del d["nodes"]["layer1_0_conv1"]

    with pytest.raises(
        TableError, match=r"has no timing of 1 of the 69 nodes of resnet18 \(the first: 'layer1_0_conv1'\)"
    ):
        check_graph(read_table(damaged(ort_table, missing)), resnet)
    other = damaged(ort_table, lambda d: d["nodes"]["pool"]["axes"][0]["terms"].update(conv1=1))
    with pytest.raises(TableError) as err:
        check_graph(read_table(other), resnet)
    assert err.value.loc == ("nodes", "pool", "axes")


def test_a_search_needs_the_table_of_its_network_and_every_width_its_bins_visit(mobilenet, torch_table):
    spec = mobilenet.spec
    check_search(torch_table, spec, bins=2)
    with pytest.raises(TableError, match="the table is for input_size 8, the search runs 16") as err:
        check_search(torch_table, type(spec)(**{**spec.__dict__, "input_size": 16}), bins=2)
    assert err.value.loc == ("key", "net", "input_size")
    with pytest.raises(TableError, match="the table is for arch mobilenet_v2, the search runs resnet18"):
        check_search(torch_table, type(spec)(**{**spec.__dict__, "arch": "resnet18"}), bins=2)
    with pytest.raises(
        TableError,
        match=r"has no timing at 32 channels of \[features.2.conv.0.0\], which a search "
        r"with 4 bins visits \(the table was profiled with 2 bins\); profile with "
        r"--bins 4",
    ) as err:
        check_search(torch_table, spec, bins=4)
    assert err.value.loc == ("nodes", "features_2_conv_0_0", "levels", 1)


# ---- the profiler on a device: torch, onnx, onnxruntime, numpy and nothing else ----------------------
PROFILE = """
import json, os, re, sys
from importlib import metadata

allowed = set(json.loads(os.environ["ALLOWED"]))
normal = lambda name: re.sub(r"[-_.]+", "-", name).lower()
owners = {name: {normal(d) for d in dists} for name, dists in metadata.packages_distributions().items()}
blocked = {name for name, dists in owners.items() if not dists & allowed}


class NotInstalled:
    # Every distribution outside ``allowed`` is as good as not installed.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
from app.cli import main

code = main(sys.argv[1:])
loaded = {normal(d) for name in list(sys.modules) for d in owners.get(name.split(".")[0], ())}
print(json.dumps({"code": code, "loaded": sorted(loaded)}))
"""


def requirements_of(names: set[str]) -> set[str]:
    """``names`` and every distribution they require (extras left out), as normalised names."""
    normal = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    seen, todo = set(), [normal(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [normal(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]) for r in requires if "extra ==" not in r]
    return seen


def test_profile_runs_with_only_torch_onnx_onnxruntime_and_numpy_installed(tmp_path):
    """The device's ``pip install torch onnx onnxruntime numpy`` (and autoslim without its dependencies):
    every other distribution of this environment is made unimportable, the command must still work."""
    out = tmp_path / "table.json"
    args = [
        "profile",
        "--arch",
        "resnet18",
        "--input-size",
        "8",
        "--width-mult",
        "0.25",
        "--runtime",
        "onnxruntime",
        "--bins",
        "2",
        "--threads",
        "1",
        "--fit-models",
        "2",
        "--block-ms",
        "0.2",
        "--device-name",
        "test board",
        "--out",
        str(out),
    ]
    allowed = requirements_of({"torch", "onnx", "onnxruntime", "numpy"}) | {"autoslim"}
    run = subprocess.run(
        [sys.executable, "-c", PROFILE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "OMP_WAIT_POLICY": "PASSIVE",
            "ALLOWED": json.dumps(sorted(allowed)),
        },
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["code"] == 0 and {"torch", "onnxruntime", "numpy"} <= set(report["loaded"]) <= allowed
    assert not {"fastapi", "sqlalchemy", "celery", "pydantic", "torchvision"} & allowed  # the check checks something
    table = read_table(out.read_bytes())
    assert table.key["device"] == "test board" and table.key["runtime"] == "onnxruntime" and table.key["bins"] == 2
    check_search(table, build_supernet("resnet18", 10, 8, 0.25).spec, bins=2)
    assert f"wrote {out}: resnet18 x0.25 at 8 px, 69 nodes" in run.stdout
