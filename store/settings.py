"""Every setting of the service, read from ``AUTOSLIM_*`` environment variables.

One class, one cached getter, nothing done on import.  The defaults are the embedded setup of
`autoslim up`: a SQLite file and a filesystem message queue under ``AUTOSLIM_HOME``, so a laptop
needs neither Postgres nor Redis; production sets ``AUTOSLIM_DATABASE_URL`` and
``AUTOSLIM_BROKER_URL`` and nothing else changes.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Queue = Literal["cpu", "gpu"]
QUEUES: tuple[str, ...] = ("cpu", "gpu")


class Settings(BaseSettings):
    """Service settings; see the README's settings table for the environment variable of each."""

    model_config = SettingsConfigDict(env_prefix="AUTOSLIM_", extra="ignore")

    home: Path = Field(default=Path("~/.autoslim"), description="Data dir of the embedded setup.")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite file under home.")
    broker_url: str = Field(default="", description="Celery broker URL; empty = filesystem queue under home.")
    broker_prefix: str = Field(default="", description="Key prefix on a shared Redis (isolates deployments).")
    work_dir: Path | None = Field(default=None, description="Per-search work directories; default home/work.")
    supernet_cache: Path | None = Field(default=None, description="Trained supernets; default home/supernets.")
    latency_cache: Path | None = Field(default=None, description="Measured latency tables; default home/latency.")
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Folders datasets may live under (os.pathsep-separated)."
    )
    default_queue: Queue = "cpu"
    max_epochs: int = Field(default=1000, description="Training epochs above this are rejected as absurd.")
    max_attempts: int = Field(default=3, description="Worker claims per search before the reaper fails it.")
    worker_gpus: str = Field(
        default="",
        description="GPUs one search of this worker runs on, one rank each "
        "(e.g. 0,1,2,3), or cpu:N for N ranks on the CPU; "
        "empty = one device.",
    )
    heartbeat_s: float = Field(default=5.0, description="Seconds between worker heartbeats.")
    progress_every_s: float = Field(default=2.0, description="Progress is written at most this often.")
    stale_after_s: float = Field(default=120.0, description="A running search with an older heartbeat is reaped.")
    reaper_every_s: float = Field(default=30.0, description="How often each worker looks for stale searches.")
    visibility_timeout_s: int = Field(
        default=7 * 24 * 3600, description="Redis redelivery of unacked tasks; longer than any search."
    )
    page_size_max: int = 100
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description=(
            "Request bodies larger than this are refused with 413 before they are read (uploads such as "
            "latency tables have their own limit)."
        ),
    )
    session_hours: float = Field(default=12.0, gt=0, description="How long a dashboard login lasts.")
    max_weights_bytes: int = Field(
        default=1 << 30,
        ge=1,
        description=("Largest weights upload (POST /weights); 1 GiB holds any torchvision CNN's fp32 state dict."),
    )
    model_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Modules whose FUNCTION may be named as MODULE:FUNCTION (comma-separated)."
    )

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    @field_validator("model_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'autoslim.db'}"

    @property
    def broker(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        """Where the embedded filesystem broker keeps its messages."""
        return self.home_dir / "broker"

    @property
    def work_root(self) -> Path:
        return (self.work_dir or self.home_dir / "work").expanduser()

    @property
    def supernet_root(self) -> Path:
        return (self.supernet_cache or self.home_dir / "supernets").expanduser()

    @property
    def latency_root(self) -> Path:
        return (self.latency_cache or self.home_dir / "latency").expanduser()

    @property
    def weights_root(self) -> Path:
        """Uploaded weights, one file per sha256: inside the work folder, which every worker reads."""
        return self.work_root / "weights"

    @property
    def resolved_data_roots(self) -> list[Path]:
        return [root.expanduser().resolve() for root in self.data_roots]


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once; tests build `Settings(...)` directly instead."""
    return Settings()
