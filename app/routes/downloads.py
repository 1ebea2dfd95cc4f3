"""GET /searches/{id}/model: the slim model of one budget, ready to run, as a file download.

The engine exports each budget's slim model (supernet weights sliced to the chosen channels, BN
calibrated for exactly that configuration) into the search's work directory, as ``.pt`` and
whichever other formats the spec asked for.  A format that was not exported is made on demand
from the ``.pt`` module (`models.files.save_model`), in a temporary folder removed after sending,
so the API needs only read access to the results.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from app import search_service as service
from app.deps import CurrentUser, SessionDep
from engine.budgets import format_amount
from engine.spec import MODEL_FORMATS
from store.tables import BudgetResult, Search, Status

router = APIRouter(prefix="/searches", tags=["searches"])

ModelFormat = Literal["pt", "onnx", "torchscript"]  # `engine.spec.MODEL_FORMATS`
MEDIA_TYPES = {"pt": "application/octet-stream", "onnx": "application/onnx", "torchscript": "application/octet-stream"}


def pick_budget(search: Search, asked: dict[str, str | None]) -> BudgetResult:
    """The budget named by one of ``macs`` / ``latency_ms`` / ``params``; with none named, the
    search's only budget (see `app.search_service.budget_result` for the errors)."""
    if search.status == Status.succeeded and len(search.budgets) == 1 and not any(asked.values()):
        return search.budgets[0]
    return service.budget_result(search, asked)


def available_formats(result: BudgetResult) -> list[str]:
    """Formats this budget can be downloaded in: all of them from an exported ``.pt``, else the exported ones."""
    files = result.files or {}
    return list(MODEL_FORMATS) if "pt" in files else [f for f in MODEL_FORMATS if f in files]


def download_name(result: BudgetResult, fmt: str) -> str:
    """``mobilenet_v2-x0.35-1.982M-macs.onnx``: the architecture and the model's own MACs."""
    config = result.config or {}
    width = f"-x{config['width_mult']:g}" if config.get("width_mult", 1.0) != 1.0 else ""
    return f"{config.get('arch', 'model')}{width}-{format_amount(result.macs, 4)}-macs{MODEL_FORMATS[fmt]}"


def _exported(search: Search, result: BudgetResult, fmt: str) -> Path | None:
    """The exported file of ``fmt`` inside the work directory, if the engine wrote one and it is there."""
    files = result.files or {}
    relative = files.get(fmt)
    if relative is None or not search.workdir:
        return None
    root = Path(search.workdir).resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def model_response(search: Search, result: BudgetResult, fmt: str) -> FileResponse:
    """Stream the model file, exporting it from the ``.pt`` module first when it was not exported."""
    if fmt not in available_formats(result):
        raise service.NotFound(
            f"no {fmt} model for this budget (it has {', '.join(available_formats(result)) or 'none'})"
        )
    name = download_name(result, fmt)
    path = _exported(search, result, fmt)
    if path is not None:
        return FileResponse(path, media_type=MEDIA_TYPES[fmt], filename=name)
    source = _exported(search, result, "pt")
    if source is None:
        raise service.NotFound(
            f"the model files of search {search.id} are not on this API host "
            f"(work directory {search.workdir}); share the results folder with the workers"
        )
    folder = Path(tempfile.mkdtemp(prefix="autoslim-model-"))
    try:
        converted = _convert(source, folder / name, int(result.config["input_size"]))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        converted,
        media_type=MEDIA_TYPES[fmt],
        filename=name,
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )


def _convert(source: Path, target: Path, input_size: int) -> Path:
    import torch

    from models.files import save_model

    # The .pt file is a whole pickled module that this service's own worker wrote.
    model = torch.load(source, map_location="cpu", weights_only=False)
    return save_model(model, target, input_size)


@router.get(
    "/{search_id}/model",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The slim model file; its name gives the architecture and MACs.",
            "content": {"application/octet-stream": {}},
        },
        404: {"description": "No such search, budget or model file."},
        409: {"description": "The search has not succeeded (yet); the body gives its status."},
        422: {"description": "An unreadable or ambiguous budget, or an unknown format."},
    },
)
def download_model(
    search_id: str,
    session: SessionDep,
    user: CurrentUser,
    macs: Annotated[str | None, Query(description="The MACs budget, e.g. 2M.")] = None,
    latency_ms: Annotated[str | None, Query()] = None,
    params: Annotated[str | None, Query()] = None,
    format: Annotated[ModelFormat, Query(description="pt (torch.load), onnx or torchscript.")] = "pt",
) -> FileResponse:
    """The slim model of one budget: `pt` (a whole module for `torch.load(..., weights_only=False)`), `onnx` or `torchscript`."""
    search = service.get_visible(session, user, search_id)
    result = pick_budget(search, {"macs": macs, "latency_ms": latency_ms, "params": params})
    return model_response(search, result, format)
