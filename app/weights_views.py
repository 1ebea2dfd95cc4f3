"""The JSON shapes of uploaded weights in the API: a summary per upload and a page of them."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from app.schemas import Page, UploadOut
from store.tables import WeightsRow


class WeightsOut(UploadOut):
    """Uploaded weights: what a search's ``weights`` field names (by ``id``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5c0d7e1a2b3c4d5e6f708192a3b4c5d6",
                    "owner": "alice",
                    "name": "mobilenet_v3_small-digits",
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "format": "pt",
                    "size_bytes": 6236441,
                    "tensors": 244,
                    "parameters": 1528106,
                    "created_at": "2026-12-01T09:00:00Z",
                    "links": {"self": "/weights/5c0d7e1a2b3c4d5e6f708192a3b4c5d6"},
                }
            ]
        }
    )

    sha256: str = Field(description="Of the file as uploaded; the same bytes uploaded again return this upload.")
    format: str = Field(description="`pt` (torch.save of a state dict) or `safetensors`.")
    tensors: int = Field(description="Entries of the state dict (parameters and buffers).")
    parameters: int = Field(description="Floating-point numbers in it (parameters and BN statistics).")
    links: dict[str, str]


class WeightsPage(Page[WeightsOut]):
    pass


def weights_out(row: WeightsRow) -> WeightsOut:
    return WeightsOut(
        id=row.id,
        owner=row.owner,
        name=row.name,
        sha256=row.sha256,
        format=row.format,
        size_bytes=row.size_bytes,
        tensors=row.tensors,
        parameters=row.parameters,
        created_at=row.created_at,
        links={"self": f"/weights/{row.id}"},
    )
