"""The YAML that declares an external experiment for ``nextbest analyze``, validated strictly: unknown
keys, a missing control, duplicate names and sources that are neither a file nor a query are errors that
name the key."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nextbest.errors import NextbestError

__all__ = [
    "ASSIGNMENT_COLUMNS",
    "METRIC_COLUMNS",
    "AnalysisConfig",
    "ArmConfig",
    "ConfigError",
    "MetricConfig",
    "SourceConfig",
    "load_config",
]

# What each source must give, by these names (a source may rename its own with ``columns``).
ASSIGNMENT_COLUMNS = ("unit", "arm", "exposed_at")
METRIC_COLUMNS = ("unit", "at", "value")
_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


class ConfigError(NextbestError):
    status = "INVALID_ARGUMENT"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """A SQL query run on the engine, or a CSV or Parquet file loaded into it."""

    query: str | None = None
    file: Path | None = None
    # {expected name: the source's own column}, e.g. {unit: customer_id}
    columns: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> SourceConfig:
        if (self.query is None) == (self.file is None):
            raise ValueError("give either query or file")
        if self.file is not None and self.file.suffix.lower() not in (".csv", ".parquet"):
            raise ValueError(f"file {self.file}: only .csv and .parquet files are read")
        return self

    def describe(self) -> str:
        return f"file {self.file}" if self.file is not None else "query"


class ArmConfig(_Strict):
    id: str = Field(min_length=1, max_length=64)
    weight: float = Field(gt=0, le=1)
    control: bool = False


class MetricConfig(_Strict):
    """``sum``: the values summed per unit over the window; ``binary``: 1 if that sum is positive;
    ``ratio``: the per-unit sums of two other metrics, divided arm by arm (delta method)."""

    name: str = Field(pattern=_NAME)
    type: Literal["sum", "binary", "ratio"] = "sum"
    source: SourceConfig | None = None
    numerator: str | None = None
    denominator: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> MetricConfig:
        if self.type == "ratio":
            if self.source is not None or not (self.numerator and self.denominator):
                raise ValueError("a ratio metric names a numerator and a denominator metric, and no source")
        elif self.source is None or self.numerator or self.denominator:
            raise ValueError(f"a {self.type} metric has a source (a query or a file) and no numerator")
        return self


class AnalysisConfig(_Strict):
    experiment: str = Field(min_length=1, max_length=64)
    # duckdb (in memory), spark (local), or a SQLAlchemy URL: sqlite:///x.db, postgresql+psycopg://...,
    # duckdb:///x.duckdb
    engine: str = "duckdb"
    # Files loaded as tables for the queries, by name; each gets a 1-based row_number column.
    tables: dict[str, Path] = Field(default_factory=dict)
    arms: list[ArmConfig] = Field(min_length=2)
    assignments: SourceConfig
    metrics: list[MetricConfig] = Field(min_length=1)
    window_days: float | None = None
    as_of: datetime | None = None
    alpha: float | None = None

    @field_validator("tables")
    @classmethod
    def _table_names(cls, tables: dict[str, Path]) -> dict[str, Path]:
        import re

        for name, path in tables.items():
            if not re.match(_NAME, name):
                raise ValueError(f"table name {name!r}: letters, digits and _ only")
            if path.suffix.lower() not in (".csv", ".parquet"):
                raise ValueError(f"table {name}: only .csv and .parquet files are read")
        return tables

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisConfig:
        ids = [a.id for a in self.arms]
        if len(set(ids)) != len(ids):
            raise ValueError(f"arms: an id is given twice ({', '.join(ids)})")
        if sum(a.control for a in self.arms) != 1:
            raise ValueError("arms: mark exactly one arm with control: true")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metrics: a name is given twice ({', '.join(names)})")
        sourced = {m.name for m in self.metrics if m.source is not None}
        for m in self.metrics:
            for part in (m.numerator, m.denominator):
                if part is not None and part not in sourced:
                    raise ValueError(f"metrics: {m.name}: {part!r} is not a metric with a source")
        if self.as_of is not None and self.as_of.tzinfo is None:
            raise ValueError("as_of: give a time zone, e.g. 2008-04-01T00:00:00Z")
        return self

    @property
    def control(self) -> str:
        return next(a.id for a in self.arms if a.control)


def load_config(path: Path) -> AnalysisConfig:
    """The validated configuration, with file paths made relative to the YAML's folder; a
    :class:`ConfigError` naming the file, the key and the reason otherwise."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with experiment, arms, assignments and metrics")
    try:
        config = AnalysisConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
    base = path.resolve().parent

    def here(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    def source(s: SourceConfig) -> SourceConfig:
        return s if s.file is None else s.model_copy(update={"file": here(s.file)})

    return config.model_copy(
        update={
            "tables": {k: here(v) for k, v in config.tables.items()},
            "assignments": source(config.assignments),
            "metrics": [
                m if m.source is None else m.model_copy(update={"source": source(m.source)})
                for m in config.metrics
            ],
        }
    )
