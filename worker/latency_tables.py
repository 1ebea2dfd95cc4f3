"""A search that names an uploaded latency table gets it as a file in its work directory.

The engine reads a table file (`engine.spec.SearchSpec.latency_table`); the service keeps tables in
the database, so the worker writes the named one into the search's work directory and hands the
engine that path.  The stored spec keeps the table's id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from app.db import session_scope
from app.tables import LatencyTableRow

FILE_NAME = "latency-table.json"


def with_table_file(engine: Engine, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """``spec`` with its latency table's id replaced by the path of the table written to ``workdir``."""
    table_id = spec.get("latency_table")
    if not table_id:
        return spec
    with session_scope(engine) as session:
        row = session.get(LatencyTableRow, table_id)
        if row is None:
            raise ValueError(f"latency table {table_id} was deleted; upload it again and submit the search anew")
        data = row.data
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / FILE_NAME
    path.write_text(json.dumps(data))
    return {**spec, "latency_table": str(path)}
