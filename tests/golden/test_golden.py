"""The golden corpus, replayed through this working tree's decision engine (issue 25).

Every decision the corpus holds was made by the pipeline of the commit its header names; this replays
the same operations, in order, on a fresh store and asserts the same answers: actions, flows, channels,
send times, scores and features (to 1e-9), rejections with their reason codes and details, experiment
exposures, cancellations, event outcomes and errors. A difference is a change of behaviour: fix it, or,
if it is intended, regenerate the corpus (README.md says how and when that is legitimate).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from nextbest.catalog import Catalog, load_catalog
from nextbest.models import ModelRegistry
from nextbest.models.compiled import ForestCompiler
from nextbest.store import Database, Store, upgrade
from nextbest.store.memory import MemoryStore
from tests.golden.corpus import Corpus, Segment, customer_sample, read_corpus
from tests.golden.record import CATALOG, CORPUS, HERE, MODELS, PLANS, TIGHT_CATALOG, tight_catalog
from tests.golden.replay import replay_segment, summary

# The SQL stores replay one customer in this many, with their whole history (a SQL decision costs a few
# times a memory one; the memory store replays everyone): about 500 decisions over the five segments.
SQL_SAMPLE = 20
PG_URL = os.environ.get("NEXTBEST_TEST_DATABASE_URL", "")
SEGMENTS = [p.name for p in PLANS]


@cache
def corpus() -> Corpus:
    return read_corpus(CORPUS)


@cache
def _catalog(name: str) -> Catalog:
    return load_catalog(HERE / name)


@cache
def _models() -> ModelRegistry:
    return ModelRegistry(MODELS)


def inputs(segment: Segment) -> tuple[Catalog, ModelRegistry]:
    """The catalog and the models ``segment`` was recorded with. A model that does not load would
    turn every score into its fallback and the replay into thousands of differences: say so instead."""
    models = _models()
    # The churn model scores customers for segments, never a decision: the corpus has none.
    broken = [s for s in models.statuses if s.state.value != "loaded" and s.kind.value != "churn"]
    if broken:
        pytest.fail(
            "the corpus's models do not load in this working tree, so every score would be a fallback: "
            + "; ".join(f"{s.kind.value} {s.version}: {s.state.value} ({s.detail})" for s in broken),
            pytrace=False,
        )
    return _catalog(segment.header["catalog"]), models


def _segment(name: str) -> Segment:
    return next(s for s in corpus().segments if s.name == name)


@pytest.mark.slow
def test_the_corpus_is_what_its_header_says() -> None:
    """The fixture's catalogs and models are the ones the corpus was recorded with, and all load."""
    c = corpus()
    assert [s.name for s in c.segments] == SEGMENTS
    assert TIGHT_CATALOG.read_text() == tight_catalog(CATALOG.read_text())
    for segment in c.segments:
        catalog, models = inputs(segment)
        assert segment.header["catalog_version"] == catalog.version
        assert c.header["catalogs"][segment.header["catalog"]] == catalog.version
        assert c.header["models"] == dict(sorted(models.current.versions.items()))
    decisions = sum(1 for _, _, op in c.operations() if op["kind"] == "decide")
    assert decisions == sum(p.decisions for p in PLANS) == 10_000


@pytest.mark.slow
@pytest.mark.parametrize("name", SEGMENTS)
def test_memory_store_reproduces_the_corpus(name: str) -> None:
    segment = _segment(name)
    catalog, models = inputs(segment)
    result = replay_segment(segment, catalog, models, MemoryStore())
    assert result.operations == len(segment.operations)
    assert not result.mismatched, summary(result)


@pytest.fixture(scope="module")
def compiled_models(pytestconfig: pytest.Config) -> ModelRegistry:
    """The corpus's models with their trees compiled, as the server scores by default. The libraries are
    kept in pytest's cache between runs (a compilation takes seconds); without a C compiler or the
    packages, the test is skipped, saying why."""
    cache = pytestconfig.cache
    assert cache is not None, "pytest's cache provider is off"
    compiler = ForestCompiler(cache.mkdir("compiled-models"))
    if compiler.unavailable:
        pytest.skip(f"compiled trees unavailable here: {compiler.unavailable}")
    models = ModelRegistry(MODELS, compiler)
    assert compiler.wait(900), "the corpus's models did not compile within 15 minutes"
    loaded = models.current
    forests = [loaded.propensity, loaded.uplift.treated if loaded.uplift else None]
    assert all(f is not None and f.compiled for f in forests), "a model was not compiled (see the log)"
    return models


@pytest.mark.slow
@pytest.mark.parametrize("name", SEGMENTS)
def test_compiled_trees_reproduce_the_corpus(name: str, compiled_models: ModelRegistry) -> None:
    """The same replay, scored by the compiled libraries: their parity with LightGBM holds on every
    decision of the corpus, not only on the rows the compiler checks."""
    segment = _segment(name)
    catalog, _ = inputs(segment)
    result = replay_segment(segment, catalog, compiled_models, MemoryStore())
    assert result.operations == len(segment.operations)
    assert not result.mismatched, summary(result)


@pytest.mark.slow
@pytest.mark.parametrize("name", SEGMENTS)
def test_batches_reproduce_the_corpus(name: str) -> None:
    """Consecutive NextAction calls as one ``decide_batch`` (``NextActionBatch``): each item answered
    as it was alone, in its turn — retries of an earlier item replay, a customer's later items see
    the earlier ones."""
    segment = _segment(name)
    catalog, models = inputs(segment)
    result = replay_segment(segment, catalog, models, MemoryStore(), batch=100)
    assert result.operations == len(segment.operations)
    assert not result.mismatched, summary(result)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    db = Database(f"sqlite:///{tmp_path / 'golden.db'}")
    upgrade(db)
    store = Store(db)
    yield store
    store.close()


@pytest.fixture
def postgresql_store() -> Iterator[Store]:
    """A PostgreSQL database of its own: the corpus's customers and request ids start from nothing."""
    if not PG_URL:
        pytest.skip("NEXTBEST_TEST_DATABASE_URL is not set")
    name = f"nextbest_golden_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        db = Database(make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
        upgrade(db)
        store = Store(db)
        yield store
        store.close()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("name", SEGMENTS)
@pytest.mark.parametrize("batch", [1, 100], ids=["single", "batch"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sql_stores_reproduce_the_corpus(
    backend: str, batch: int, name: str, request: pytest.FixtureRequest
) -> None:
    """A sample of customers, whole, on each SQL store: one call at a time, and consecutive calls as
    one ``decide_batch`` (whose round of decisions the SQL store commits together)."""
    segment = customer_sample(_segment(name), SQL_SAMPLE)
    catalog, models = inputs(segment)
    store: Store = request.getfixturevalue(f"{backend}_store")
    result = replay_segment(segment, catalog, models, store, batch=batch)
    assert result.decisions >= 30
    assert not result.mismatched, summary(result)
