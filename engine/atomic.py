"""Files written whole or not at all.

A resumable job reads its own files back (search state, checkpoints, latency tables, results): a
crash or a kill mid-write must leave the previous file, never half of a new one.  Everything is
written to a temporary file beside the target and moved over it in one step (`os.replace`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; moved over ``path`` when the block succeeds,
    removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any, indent: int | None = None) -> Path:
    """``data`` as JSON at ``path``, atomically."""
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent))
    return path
