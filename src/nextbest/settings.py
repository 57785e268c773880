"""One Settings object: command-line arguments > NEXTBEST_* environment variables > defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from nextbest.catalog import bundled_catalog_path
from nextbest.models.artifacts import bundled_models_path

__all__ = ["DEFAULT_DATABASE_URL", "Settings"]

DEFAULT_DATABASE_URL = "sqlite:///var/nextbest.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXTBEST_", extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=50051, ge=0, le=65535, description="Port to listen on; 0 picks a free one.")
    catalog: Path = Field(default_factory=bundled_catalog_path, description="The catalog YAML file.")
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL: sqlite:///path.db (embedded) or postgresql+psycopg://user@host/db.",
    )
    models_dir: Path | None = Field(
        default_factory=bundled_models_path,
        description="Where promoted models are loaded from (models/<kind>/PROMOTED); unset: no models.",
    )
    workers: int = Field(default=16, ge=1, le=1024, description="Threads handling calls.")
    processes: int = Field(
        default=1, ge=1, le=64, description="Server processes sharing the port (SO_REUSEPORT); one per core."
    )
    migrate: bool = Field(default=True, description="Apply schema migrations at start.")
    max_concurrent: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Most nextbest calls running at once (unset: workers); more get RESOURCE_EXHAUSTED.",
    )
    max_batch: int = Field(default=256, ge=1, le=10000, description="Most decisions in one group commit.")
    health_interval: float = Field(default=1.0, gt=0, description="Seconds between database health checks.")
    database_connect_timeout: float = Field(
        default=3.0,
        ge=2,
        description="Seconds to wait for a PostgreSQL connection, and for an answer to a health check.",
    )
    database_statement_timeout: float = Field(
        default=5.0, gt=0, description="Seconds a PostgreSQL statement may run before the server cancels it."
    )
    grace: float = Field(default=5.0, ge=0, description="Seconds in-flight calls get at shutdown.")
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics over HTTP on this port (off when unset).",
    )
    metrics_interval: float = Field(
        default=60.0, gt=0, description="Seconds between recounts of experiment units and sample ratios."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
