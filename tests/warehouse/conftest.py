"""A small simulated store (the demo's catalog and simulator, in process) on each test backend, fresh for
these tests, and helpers to compare what different engines computed from it."""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from nextbest.catalog import Catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.simulate import START, EngineBackend, Simulator, population
from nextbest.store import Database, Store, upgrade
from nextbest.store.schema import assignments, decisions, erasures, events, experiment_units, exposures
from tests.conftest import BACKENDS, PG_URL

DAYS = 10
AS_OF = START + timedelta(days=DAYS)


def fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """A fresh, migrated database of ``backend``; dropped afterwards on PostgreSQL."""
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'store.db'}"
        db = Database(url)
        upgrade(db)
        db.dispose()
        yield url
        return
    name = f"nextbest_wh_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    upgrade(db)
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def simulated(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> tuple[str, datetime]:
    """A SQLite store after ``DAYS`` simulated days of 200 customers through the bundled catalog (seed 1,
    as the demo); its URL and the end of the simulation."""
    folder = tmp_path_factory.mktemp("simulated")
    url = next(fresh_database("sqlite", folder))
    store = Store(Database(url))
    engine = DecisionEngine(catalog, store, clock=lambda: START)
    Simulator(EngineBackend(engine), population(200, seed=1), days=DAYS, seed=1, shards=2).run()
    store.close()
    return url, AS_OF


@pytest.fixture(scope="session")
def simulated_copies(
    simulated: tuple[str, datetime], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The same simulated store on every test backend: {backend: URL} (PostgreSQL gets a row-for-row
    copy of the SQLite store)."""
    urls = {"sqlite": simulated[0]}
    if "postgresql" not in BACKENDS:
        yield urls
        return
    for url in fresh_database("postgresql", tmp_path_factory.mktemp("copy")):
        source, target = Database(simulated[0]), Database(url)
        with source.reader.connect() as read, target.writer.begin() as write:
            for table in (decisions, exposures, assignments, experiment_units, events, erasures):
                rows = [dict(r._mapping) for r in read.execute(select(*table.columns))]
                if rows:
                    write.execute(table.insert(), rows)
        source.dispose()
        target.dispose()
        yield {**urls, "postgresql": url}


def assert_close(expected: Any, actual: Any, path: str = "", rel: float = 1e-9) -> None:
    """Equal structures, numbers equal to ``rel`` (engines add floats in their own order)."""
    if dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        assert type(expected) is type(actual), (path, expected, actual)
        expected, actual = dataclasses.asdict(expected), dataclasses.asdict(actual)
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(expected) == set(actual), (path, expected, actual)
        for key in expected:
            assert_close(expected[key], actual[key], f"{path}/{key}", rel)
    elif isinstance(expected, list | tuple):
        assert len(expected) == len(actual), (path, expected, actual)
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_close(e, a, f"{path}[{i}]", rel)
    elif isinstance(expected, float) and not isinstance(actual, bool) and isinstance(actual, int | float):
        assert math.isclose(expected, actual, rel_tol=rel, abs_tol=1e-12), (path, expected, actual)
    else:
        assert expected == actual, (path, expected, actual)
