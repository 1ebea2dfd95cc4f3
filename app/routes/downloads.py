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
from app.spec_validation import FieldError
from app.tables import BudgetResult, Search, Status
from engine.budgets import BudgetError, format_amount, parse_amount

router = APIRouter(prefix="/searches", tags=["searches"])

ModelFormat = Literal["pt", "onnx", "torchscript"]
EXTENSIONS = {"pt": ".pt", "onnx": ".onnx", "torchscript": ".ts"}
MEDIA_TYPES = {"pt": "application/octet-stream", "onnx": "application/onnx", "torchscript": "application/octet-stream"}
FILE_KEYS = {"pt": ("pt",), "onnx": ("onnx",), "torchscript": ("ts", "torchscript")}
"""The keys a format may have in the engine's ``files`` (its export formats are file extensions)."""


def pick_budget(search: Search, asked: dict[str, str | None]) -> BudgetResult:
    """The budget result named by one of ``macs`` / ``latency_ms`` / ``params`` (``2M`` or
    ``2000000``); with none named, the search's only budget.  422 for an unreadable or ambiguous
    query, 404 for a budget the search does not have, 409 while it has not succeeded."""
    if search.status != Status.succeeded:
        raise service.Conflict(f"search is {search.status}; models exist once it has succeeded", search.status)
    named = {kind: text for kind, text in asked.items() if text is not None}
    have = ", ".join(f"{r.kind}={r.target:g}" for r in search.budgets) or "none"
    if len(named) > 1:
        raise FieldError(("query", *named), "ask for one budget at a time")
    if not named:
        if len(search.budgets) == 1:
            return search.budgets[0]
        raise FieldError(("query", "macs"), f"name the budget, e.g. macs=...; this search has {have}")
    (kind, text), = named.items()
    try:
        target = parse_amount(text)
    except BudgetError as err:
        raise FieldError(("query", kind), str(err)) from None
    for result in search.budgets:
        if result.kind == kind and abs(result.target - target) <= 1e-9 * max(1.0, abs(target)):
            return result
    raise service.NotFound(f"this search has no {kind} budget of {target:g} (it has {have})")


def available_formats(result: BudgetResult) -> list[str]:
    """Formats this budget can be downloaded in: all of them from an exported ``.pt``, else the exported ones."""
    files = result.files or {}
    return list(EXTENSIONS) if "pt" in files else [f for f in EXTENSIONS if any(k in files for k in FILE_KEYS[f])]


def download_name(result: BudgetResult, fmt: str) -> str:
    """``mobilenet_v2-x0.35-1.982M-macs.onnx``: the architecture and the model's own MACs."""
    config = result.config or {}
    width = f"-x{config['width_mult']:g}" if config.get("width_mult", 1.0) != 1.0 else ""
    return f"{config.get('arch', 'model')}{width}-{format_amount(result.macs, 4)}-macs{EXTENSIONS[fmt]}"


def _exported(search: Search, result: BudgetResult, fmt: str) -> Path | None:
    """The exported file of ``fmt`` inside the work directory, if the engine wrote one and it is there."""
    files = result.files or {}
    relative = next((files[k] for k in FILE_KEYS[fmt] if files.get(k)), None)
    if relative is None or not search.workdir:
        return None
    root = Path(search.workdir).resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def model_response(search: Search, result: BudgetResult, fmt: str) -> FileResponse:
    """Stream the model file, exporting it from the ``.pt`` module first when it was not exported."""
    if fmt not in available_formats(result):
        raise service.NotFound(f"no {fmt} model for this budget (it has {', '.join(available_formats(result)) or 'none'})")
    name = download_name(result, fmt)
    path = _exported(search, result, fmt)
    if path is not None:
        return FileResponse(path, media_type=MEDIA_TYPES[fmt], filename=name)
    source = _exported(search, result, "pt")
    if source is None:
        raise service.NotFound(f"the model files of search {search.id} are not on this API host "
                               f"(work directory {search.workdir}); share the results folder with the workers")
    folder = Path(tempfile.mkdtemp(prefix="autoslim-model-"))
    try:
        converted = _convert(source, folder / name, int(result.config["input_size"]))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(converted, media_type=MEDIA_TYPES[fmt], filename=name,
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))


def _convert(source: Path, target: Path, input_size: int) -> Path:
    import torch

    from models.files import save_model

    # The .pt file is a whole pickled module that this service's own worker wrote.
    model = torch.load(source, map_location="cpu", weights_only=False)
    return save_model(model, target, input_size)


@router.get("/{search_id}/model", response_class=FileResponse, responses={
    200: {"description": "The slim model file; its name gives the architecture and MACs.",
          "content": {"application/octet-stream": {}}},
    404: {"description": "No such search, budget or model file."},
    409: {"description": "The search has not succeeded (yet); the body gives its status."},
    422: {"description": "An unreadable or ambiguous budget, or an unknown format."}})
def download_model(search_id: str, session: SessionDep, user: CurrentUser,
                   macs: Annotated[str | None, Query(description="The MACs budget, e.g. 2M.")] = None,
                   latency_ms: Annotated[str | None, Query()] = None,
                   params: Annotated[str | None, Query()] = None,
                   format: Annotated[ModelFormat, Query(description="pt (torch.load), onnx or torchscript.")] = "pt",
                   ) -> FileResponse:
    """The slim model of one budget: `pt` (a whole module for `torch.load(..., weights_only=False)`), `onnx` or `torchscript`."""
    search = service.get_visible(session, user, search_id)
    result = pick_budget(search, {"macs": macs, "latency_ms": latency_ms, "params": params})
    return model_response(search, result, format)
