"""The JSON shapes of latency tables in the API: a summary per table and a page of them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.schemas import Page, UploadOut
from store.tables import LatencyTableRow


class LatencyTableLinks(BaseModel):
    self: str
    file: str


class LatencyTableOut(UploadOut):
    """An uploaded table: the network it describes, the device and runtime it was measured on, and
    the range of latencies it predicts (what a search's ``latency_ms`` budgets may ask for)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "9b1f0c2d3e4f5a6b7c8d9e0f1a2b3c4d",
                    "owner": "alice",
                    "name": "pixel-8",
                    "arch": "mobilenet_v2",
                    "input_size": 32,
                    "width_mult": 0.35,
                    "num_classes": 10,
                    "device": "Google Tensor G3",
                    "runtime": "onnxruntime 1.32.0 (CPUExecutionProvider, 1 thread, batch 1)",
                    "bins": 10,
                    "nodes": 153,
                    "min_ms": 0.21,
                    "max_ms": 0.46,
                    "size_bytes": 61234,
                    "created_at": "2026-12-01T09:00:00Z",
                    "links": {"self": "/latency-tables/9b1f...", "file": "/latency-tables/9b1f.../file"},
                }
            ]
        }
    )

    arch: str
    input_size: int
    width_mult: float
    num_classes: int
    device: str
    runtime: str = Field(description="Runtime, version, execution provider, threads and batch size.")
    bins: int = Field(description="Channel bins it was profiled for; a search with other bins may find widths missing.")
    nodes: int
    min_ms: float = Field(description="Predicted latency of the smallest configuration.")
    max_ms: float = Field(description="Predicted latency of the full network.")
    links: LatencyTableLinks


class LatencyTablePage(Page[LatencyTableOut]):
    pass


def table_out(row: LatencyTableRow) -> LatencyTableOut:
    base = f"/latency-tables/{row.id}"
    return LatencyTableOut(
        id=row.id,
        owner=row.owner,
        name=row.name,
        arch=row.arch,
        input_size=row.input_size,
        width_mult=row.width_mult,
        num_classes=row.num_classes,
        device=row.device,
        runtime=row.runtime,
        bins=row.bins,
        nodes=row.nodes,
        min_ms=row.min_ms,
        max_ms=row.max_ms,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
        links=LatencyTableLinks(self=base, file=f"{base}/file"),
    )
