"""Request bodies that are files (a latency table, trained weights): read with a size limit.

The declared length is checked before anything is read and the running count while reading, so an
oversized upload is a 413 after at most one chunk past the limit, never a full read into memory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request, status


async def limited_body(request: Request, limit: int, what: str) -> AsyncIterator[bytes]:
    """The body's chunks; 413 (naming ``what`` and the limit) once it is longer than ``limit`` bytes."""
    too_large = HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"{what} is at most {limit} bytes")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        yield chunk


async def body_bytes(request: Request, limit: int, what: str) -> bytes:
    """The whole body in memory (for files small enough to parse as they are)."""
    return b"".join([chunk async for chunk in limited_body(request, limit, what)])


@dataclass
class SpooledUpload:
    """A body written to a temporary file in the folder it will be kept in, hashed on the way."""

    path: Path
    sha256: str
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


async def body_to_file(request: Request, limit: int, what: str, folder: Path) -> SpooledUpload:
    """Stream the body into ``folder`` (so keeping it is a rename); the caller keeps or discards it."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=folder, prefix=".upload-")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(handle, "wb") as out:
            async for chunk in limited_body(request, limit, what):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return SpooledUpload(Path(name), digest.hexdigest(), size)
