"""A search that names uploads (a latency table, trained weights) gets them as files.

The engine reads files (`engine.spec.SearchSpec.latency_table`, ``.weights``); the stored spec keeps
the uploads' ids, which the worker swaps for paths just before running.  A latency table lives in
the database and is written into the search's work directory; weights already lie in the shared
work folder (``Settings.weights_root/<sha256>``), put there by the API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine

from store.db import session_scope
from store.tables import LatencyTableRow, WeightsRow

TABLE_FILE = "latency-table.json"
T = TypeVar("T")


def with_upload_files(engine: Engine, spec: dict[str, Any], workdir: Path, weights_root: Path) -> dict[str, Any]:
    """``spec`` with each named upload's id replaced by the path of its file."""
    spec = dict(spec)
    if spec.get("latency_table"):
        data = _stored(engine, LatencyTableRow, spec["latency_table"], "latency table", lambda row: row.data)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / TABLE_FILE).write_text(json.dumps(data))
        spec["latency_table"] = str(workdir / TABLE_FILE)
    if spec.get("weights"):
        path = weights_root / _stored(engine, WeightsRow, spec["weights"], "weights", lambda row: row.sha256)
        if not path.is_file():
            raise ValueError(
                f"the weights file {path} is not on this worker: workers must share AUTOSLIM_WORK_DIR with the API"
            )
        spec["weights"] = str(path)
    return spec


def _stored(engine: Engine, model: type, row_id: str, what: str, read: Callable[[Any], T]) -> T:
    with session_scope(engine) as session:
        row = session.get(model, row_id)
        if row is None:
            raise ValueError(f"{what} {row_id} was deleted; upload again and submit the search anew")
        return read(row)
