"""One Settings object: command-line arguments > NEXTBEST_* environment variables > defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nextbest.catalog import bundled_catalog_path
from nextbest.models.artifacts import bundled_models_path
from nextbest.store.pseudonyms import CustomerIds, load_key

__all__ = ["DEFAULT_DATABASE_URL", "Settings"]


def _data_home() -> Path:
    """Where a user's application data lives (XDG Base Directory): the same wherever a command is run."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def _cache_home() -> Path:
    """Where a user's cached files live (XDG Base Directory)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


# Not relative to the working directory: `nextbest report` run from another directory reads the database
# `nextbest serve` writes, instead of creating an empty one there.
DEFAULT_DATABASE_URL = f"sqlite:///{_data_home() / 'nextbest' / 'nextbest.db'}"


class Settings(BaseSettings):
    # Inputs stay out of error messages: some settings are secrets.
    model_config = SettingsConfigDict(
        env_prefix="NEXTBEST_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

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
    compiled_scoring: bool = Field(
        default=True,
        description="Score with the models' trees compiled to machine code once checked equal to LightGBM "
        "(needs a C compiler; compiled in the background, LightGBM scores meanwhile and without one).",
    )
    model_cache_dir: Path = Field(
        default_factory=lambda: _cache_home() / "nextbest" / "compiled-models",
        description="Where compiled models are kept between starts, by the digest of the model.",
    )
    workers: int = Field(default=16, ge=1, le=1024, description="Threads handling calls.")
    max_concurrent: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Most nextbest calls running at once (unset: workers); more get RESOURCE_EXHAUSTED.",
    )
    processes: int = Field(
        default=1, ge=1, le=64, description="Server processes sharing the port (SO_REUSEPORT); one per core."
    )
    migrate: bool = Field(default=True, description="Apply schema migrations at start.")
    database_wait: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="Seconds to wait at start for a database that does not answer.",
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
    # Access control, server side (see nextbest.server.auth and nextbest.server.tls).
    tokens_file: Path | None = Field(
        default=None,
        description="Callers' tokens and certificate subjects with roles; reloaded on SIGHUP and change.",
    )
    tokens: SecretStr | None = Field(
        default=None, description="The same entries inline (';' or new lines between them)."
    )
    tls_cert: Path | None = Field(default=None, description="Server certificate (PEM); with tls_key: TLS.")
    tls_key: Path | None = Field(default=None, description="Server private key (PEM).")
    tls_client_ca: Path | None = Field(
        default=None, description="Require client certificates signed by this CA (mutual TLS)."
    )
    insecure_open: bool = Field(
        default=False, description="Serve a non-loopback address without authentication, on purpose."
    )
    reflection: bool = Field(default=True, description="Serve gRPC server reflection.")
    # Access control, client side (simulate --target, benchmarks, NextbestClient.from_settings).
    token: SecretStr | None = Field(default=None, description="Bearer token sent with every call.")
    token_file: Path | None = Field(default=None, description="A file holding the bearer token.")
    tls: bool = Field(default=False, description="Connect with TLS (implied by tls_ca or a client cert).")
    tls_ca: Path | None = Field(default=None, description="CA that signed the server's certificate (PEM).")
    tls_client_cert: Path | None = Field(default=None, description="Client certificate for mutual TLS.")
    tls_client_key: Path | None = Field(default=None, description="Client private key for mutual TLS.")
    tls_server_name: str | None = Field(
        default=None, description="Name to verify the server certificate against, if not the host."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics over HTTP on this port (off when unset).",
    )
    health_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Also serve grpc.health.v1 alone, in plaintext, on this port: probes never wait behind "
        "decisions, and gRPC refuses calls beyond max_concurrent before they reach Python.",
    )
    metrics_interval: float = Field(
        default=60.0, gt=0, description="Seconds between recounts of experiment units and sample ratios."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    customer_id_key: SecretStr | None = Field(
        default=None,
        description="Store customer ids as HMAC-SHA256 with this key (at least 16 bytes); unset: raw ids.",
    )
    customer_id_key_file: Path | None = Field(
        default=None, description="A file holding the customer id key (instead of customer_id_key)."
    )

    @field_validator("customer_id_key")
    @classmethod
    def _key_is_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            load_key(value.get_secret_value(), None)
        return value

    @field_validator("customer_id_key_file")
    @classmethod
    def _key_file_is_usable(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_key(None, value)
        return value

    def customer_ids(self) -> CustomerIds:
        """How the store keeps customer ids: keyed digests when a key is configured, else raw. Raises
        ``ValueError`` saying what to fix (the key is never in the message)."""
        key = self.customer_id_key.get_secret_value() if self.customer_id_key else None
        return CustomerIds(load_key(key, self.customer_id_key_file))
