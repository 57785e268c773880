"""Shared fixtures. Store, server and report tests run on SQLite and, when NEXTBEST_TEST_DATABASE_URL
points at a PostgreSQL server, on PostgreSQL too (a fresh database per test session, dropped at the end)."""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from nextbest.catalog import Catalog, bundled_catalog_path, load_catalog, parse_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.experiments import assign
from nextbest.models.registry import ModelRegistry, ModelSet
from nextbest.models.send_time import HOURS_OF_WEEK, SendTimeModel
from nextbest.store import Database, Store, upgrade

PG_URL = os.environ.get("NEXTBEST_TEST_DATABASE_URL", "")
# Servers in tests load no models (an empty models directory: every kind MISSING, fallbacks), so their
# scores are the catalog's declared ones; model tests pass a models directory of their own.
os.environ.setdefault("NEXTBEST_MODELS_DIR", tempfile.mkdtemp(prefix="nextbest-no-models-"))
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])

# Slow tests (``make test-fast`` leaves them out) are marked in place with ``@pytest.mark.slow``, except
# in modules other developers own, marked here by node-id prefix until their owners move the mark.
SLOW_ELSEWHERE = (
    "tests/store/test_write_lock.py::test_the_lock_excludes_another_process",  # a second process
    "tests/store/test_write_lock.py::test_decisions_and_events_wait_for_the_lock",
    "tests/store/test_store.py::test_concurrent_batches_for_one_customer_lose_nothing",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(SLOW_ELSEWHERE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs a command in process (``main(["serve", ...])``) configures the root logger; the
    next test must not inherit its level and handler (its INFO lines would land in that test's stderr)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(bundled_catalog_path())


@contextmanager
def fresh_postgres_database(prefix: str = "nextbest_test") -> Iterator[str]:
    """The URL of a new, empty database beside NEXTBEST_TEST_DATABASE_URL's, dropped on the way out
    (also when the block fails)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session (each xdist worker has its own)."""
    if not PG_URL:
        pytest.skip("NEXTBEST_TEST_DATABASE_URL is not set")
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    path: Path = tmp_path_factory.mktemp("sqlite") / "nextbest.db"
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def migrated(database_url: str) -> str:
    db = Database(database_url)
    upgrade(db)
    db.dispose()
    return database_url


@pytest.fixture
def store(migrated: str) -> Iterator[Store]:
    s = Store(Database(migrated))
    yield s
    s.close()


def evening_registry() -> ModelRegistry:
    """A registry serving a send-time model whose every customer reads at 19:00 UTC (population only)."""
    probs = np.full(HOURS_OF_WEEK, 0.3 / (HOURS_OF_WEEK - 7))
    probs[[day * 24 + 19 for day in range(7)]] = 0.1
    registry = ModelRegistry(None)
    registry.current = ModelSet(send_time=SendTimeModel(probs, 10.0))
    return registry


def uid(prefix: str = "u") -> str:
    """A unique id, so tests sharing a session database never see each other's rows."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def find_unit(catalog: Catalog, wanted: dict[str, str]) -> str:
    """A unit whose arms are ``wanted`` ({experiment: arm})."""
    for i in range(100_000):
        unit = f"find-{uuid.uuid4().hex[:8]}-{i}"
        if all(assign(catalog.experiment(e), unit).arm_id == arm for e, arm in wanted.items()):  # type: ignore[arg-type]
            return unit
    raise AssertionError(f"no unit with arms {wanted}")


def heavy_holdout_catalog() -> Catalog:
    """The bundled catalog with 30 % holdouts, so that many units are held out."""
    data = yaml.safe_load(bundled_catalog_path().read_text())
    for exp in data["experiments"]:
        if exp["id"] in ("global_holdout", "cart_flow_holdout"):
            exp["arms"][0]["weight"], exp["arms"][1]["weight"] = 0.3, 0.7
    return parse_catalog(yaml.safe_dump(data), "heavy.yaml")


def sqlite_engine(path: Path, catalog: Catalog) -> Iterator[DecisionEngine]:
    """An in-process engine on a fresh, migrated SQLite file (for module-scoped fixtures)."""
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    store = Store(db)
    yield DecisionEngine(catalog, store)
    store.close()
