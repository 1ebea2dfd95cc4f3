"""GET /searches/{id}/model: each format loads and computes what the supernet computes at that budget's
configuration, with BN calibrated as the engine calibrates it; errors as in the rest of the API."""

from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import models
from engine.calibrate import calibrate_bn
from engine.data import as_batches, load_data
from engine.train import load_supernet
from store.tables import Search


@pytest.fixture(scope="module")
def reference(app, finished_search):
    """The trained supernet, the engine's calibration sample and test inputs for the finished search."""
    with app.state.sessionmaker() as session:
        search = session.get(Search, finished_search["id"])
        supernet_path = Path(search.supernet.path)
    spec = finished_search["spec"]
    data = load_data(spec["dataset"], spec["input_size"], spec["search"]["val_fraction"], spec["seed"])
    calib = as_batches(data.train_plain, spec["search"]["calib_size"], spec["search"]["calib_batch_size"], spec["seed"])
    return load_supernet(supernet_path), calib, as_batches(data.test, 64).x


def supernet_logits(reference, config: dict) -> torch.Tensor:
    supernet, calib, x = reference
    supernet.set_widths(models.ChannelConfig.from_dict(config).widths(supernet))
    calibrate_bn(supernet, calib)
    with torch.no_grad():
        return supernet.eval()(x)


def download(client, search_id: str, **params):
    return client.get(f"/searches/{search_id}/model", params=params)


def test_every_format_computes_the_calibrated_supernet_at_each_budget(admin, finished_search, reference):
    x = reference[2]
    for budget in finished_search["results"]:
        config = admin.get(budget["config"]).json()
        expected = supernet_logits(reference, config)
        got = {}
        for fmt in ("pt", "onnx", "torchscript"):
            response = download(admin, finished_search["id"], macs=f"{budget['target']:g}", format=fmt)
            assert response.status_code == 200, response.text
            got[fmt] = response.content
        with torch.no_grad():
            pt = torch.load(io.BytesIO(got["pt"]), weights_only=False)(x)
            ts = torch.jit.load(io.BytesIO(got["torchscript"]))(x)
        onnx = onnxruntime.InferenceSession(got["onnx"]).run(None, {"input": x.numpy()})[0]
        assert torch.equal(pt, expected)
        torch.testing.assert_close(ts, expected, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(onnx, expected.numpy(), atol=1e-4, rtol=1e-4)
        assert (pt.argmax(1) == ts.argmax(1)).all()


def test_the_file_name_gives_architecture_and_macs(admin, finished_search):
    for budget in finished_search["results"]:
        for fmt, ext in (("pt", "pt"), ("onnx", "onnx"), ("torchscript", "ts")):
            response = download(admin, finished_search["id"], macs=f"{budget['target']:g}", format=fmt)
            disposition = response.headers["content-disposition"]
            name = re.search(r'filename="([^"]+)"', disposition).group(1)
            assert name.startswith("resnet18-x0.25-") and name.endswith(f"-macs.{ext}"), name
            assert name.split("-")[2] == f"{budget['macs'] / 1e6:.4g}M", name  # the model's MACs, not the budget's


def test_a_format_made_on_demand_leaves_no_temporary_files(admin, finished_search):
    before = set(Path(tempfile.gettempdir()).glob("autoslim-model-*"))
    budget = finished_search["results"][0]
    assert download(admin, finished_search["id"], macs=f"{budget['target']:g}", format="torchscript").status_code == 200
    assert set(Path(tempfile.gettempdir()).glob("autoslim-model-*")) == before


def test_errors_name_what_is_wrong(admin, alice, bob, anonymous, finished_search, valid):
    search_id = finished_search["id"]
    assert download(anonymous, search_id, macs="7.5M").status_code == 401
    assert download(bob, search_id, macs="7.5M").status_code == 404  # not his: not told apart from unknown
    assert download(admin, "0" * 32, macs="7.5M").status_code == 404
    missing = download(admin, search_id, macs="5M")
    assert missing.status_code == 404 and "macs=7.5e+06, macs=8.4e+06" in missing.json()["detail"]
    assert download(admin, search_id, macs="lots").status_code == 422
    assert download(admin, search_id, macs="7.5M", format="tflite").status_code == 422
    assert download(admin, search_id, macs="7.5M", params="100k").status_code == 422
    unnamed = download(admin, search_id)  # two budgets: which one?
    assert (
        unnamed.status_code == 422
        and "name one budget; this search has macs=7.5e+06" in unnamed.json()["detail"][0]["msg"]
    )
    queued = alice.post("/searches", json=valid).json()["id"]
    pending = download(alice, queued, macs="2M")
    assert pending.status_code == 409 and pending.json()["status"] == "queued"
