"""Compiled trees against LightGBM's own predictions: parity on the bundled models, the cache, and the
fallback to LightGBM when compilation is unavailable, fails or yields a library that differs."""

from __future__ import annotations

import logging
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
import pytest

from nextbest.catalog import bundled_catalog_path, load_catalog
from nextbest.decision.candidates import Candidate
from nextbest.decision.scoring import score_candidates
from nextbest.domain import DecisionRequest, RequestContext
from nextbest.models import bundled_models_path
from nextbest.models import features as feats
from nextbest.models.compiled import (
    TOLERANCE,
    CompiledForest,
    ForestCompiler,
    LightGBMForest,
    _address,
    probe_rows,
)
from nextbest.models.registry import BinaryModel, ModelRegistry, ModelSet
from nextbest.state import CustomerSnapshot, CustomerState, Journey

MODELS = bundled_models_path()
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
# A compiling command that fails as a compiler would.
FAILING = (sys.executable, "-c", "import sys; sys.exit('RuntimeError: the compiler crashed')")


def _binary(models: ModelSet) -> dict[str, BinaryModel]:
    """Every LightGBM forest of the bundled models: the propensity model, the uplift model's two
    classifiers and its effect regressions (the X-learner's two)."""
    assert models.propensity is not None and models.uplift is not None
    return {
        "propensity": models.propensity,
        "uplift-treated": models.uplift.treated,
        "uplift-control": models.uplift.control,
        **{f"uplift-effect-{i}": m for i, (m, _) in enumerate(models.uplift.effects)},
    }


# The bundled models' forests (the uplift model is an X-learner: two effect regressions).
FORESTS = ("propensity", "uplift-treated", "uplift-control", "uplift-effect-0", "uplift-effect-1")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding the bundled models' libraries, compiled once for the module."""
    if shutil.which("cc") is None and shutil.which("gcc") is None and shutil.which("clang") is None:
        pytest.skip("no C compiler on this machine: compiled scoring is unavailable (see the fallback tests)")
    path = tmp_path_factory.mktemp("compiled")
    compiler = ForestCompiler(path)
    assert compiler.unavailable is None
    ModelRegistry(MODELS, compiler)
    assert compiler.wait(900)
    assert len(compiler.compiled) == len(FORESTS), compiler.compiled
    return path


@pytest.fixture(scope="module")
def compiled(cache: Path) -> ModelSet:
    registry = ModelRegistry(MODELS, ForestCompiler(cache))
    models = registry.current
    assert all(m.compiled for m in _binary(models).values())
    return models


def _rows(model: BinaryModel, n: int, seed: int) -> npt.NDArray[np.float64]:
    """Rows like the server's (customer and action columns in their ranges, action codes known and
    unknown) mixed with the parity probe's edge values (thresholds and their neighbours, NaN, zeros,
    infinities, categories outside the model's sets)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, model.num_feature)) * rng.choice([0.01, 1.0, 30.0, 1000.0], size=(n, 1))
    for name in feats.CATEGORICAL:
        column = model.card.features.index(name)
        x[:, column] = rng.integers(-1, 25, size=n)
    x[rng.random(x.shape) < 0.15] = np.nan
    x[rng.random(x.shape) < 0.05] = 0.0
    edges = probe_rows(model.booster.model_to_string(), model.num_feature, n, seed)
    return np.where(rng.random(x.shape) < 0.5, x, edges)


@pytest.mark.slow
@pytest.mark.parametrize("role", FORESTS)
def test_compiled_predictions_equal_lightgbms_own(compiled: ModelSet, role: str) -> None:
    """Raw scores and probabilities, over 50,000 rows and in the server's batch sizes, within 1e-9 of
    ``Booster.predict`` (on these models they are bit for bit the same)."""
    model = _binary(compiled)[role]
    x = _rows(model, 50_000, seed=len(role))
    forest = model.forest
    assert isinstance(forest, CompiledForest)
    for raw in (False, True):
        expected = model.booster.predict(x, raw_score=raw, num_threads=1)
        assert np.max(np.abs(forest.predict(x, raw=raw) - expected)) <= TOLERANCE
        for size in (1, 9, 20):
            got = forest.predict(np.ascontiguousarray(x[:size]), raw=raw)
            assert np.max(np.abs(got - expected[:size])) <= TOLERANCE
    # A column slice (not C-contiguous) is copied, not misread.
    wide = np.concatenate([x[:50], x[:50]], axis=1)
    assert (
        np.max(np.abs(forest.predict(wide[:, : model.num_feature]) - model.booster.predict(x[:50])))
        <= TOLERANCE
    )


@pytest.mark.slow
def test_scores_are_the_same_with_compiled_trees(compiled: ModelSet) -> None:
    """What the scoring stage returns (scores, rejections, logged features) with compiled trees is what
    it returns with LightGBM, for the bundled catalog's cart actions (propensity and uplift)."""
    lightgbm = ModelRegistry(MODELS).current
    catalog = load_catalog(bundled_catalog_path())
    actions = [a for a in catalog.actions if "cart_abandoned" in a.triggers]
    assert any(a.flow in compiled.uplift.flows for a in actions)  # type: ignore[union-attr]
    rng = np.random.default_rng(3)
    for k in range(50):
        state = CustomerState(
            f"u{k}",
            first_seen_at=NOW - timedelta(days=float(rng.uniform(1, 900))),
            orders_count=int(rng.integers(0, 12)),
            revenue_total=float(rng.uniform(0, 3000)),
            last_order_at=None if k % 3 == 0 else NOW - timedelta(days=float(rng.uniform(0, 300))),
            last_engagement_at=None if k % 4 == 0 else NOW - timedelta(hours=float(rng.uniform(0, 900))),
            engagement_hours=MappingProxyType({int(rng.integers(0, 168)): 2}),
        )
        request = DecisionRequest(
            f"r{k}",
            f"u{k}",
            "cart_abandoned",
            NOW,
            RequestContext(cart_value=None if k % 5 == 0 else float(rng.uniform(5, 400))),
        )
        candidates = [Candidate.of(a, Journey(active=False)) for a in actions]
        results = [
            score_candidates(
                candidates,
                NOW,
                snapshot=CustomerSnapshot(state),
                request=request,
                zone=catalog.policy.time_zone,
                models=models,
            )
            for models in (compiled, lightgbm)
        ]
        (fast, fast_rejected), (slow, slow_rejected) = results
        assert [s.action.id for s in fast] == [s.action.id for s in slow]
        assert [s.features for s in fast] == [s.features for s in slow]
        assert np.allclose([s.score for s in fast], [s.score for s in slow], rtol=0, atol=TOLERANCE)
        assert [r.action_id for r in fast_rejected] == [r.action_id for r in slow_rejected]


@pytest.mark.slow
def test_a_cached_library_is_used_at_load_without_compiling(cache: Path) -> None:
    compiler = ForestCompiler(cache)
    models = ModelRegistry(MODELS, compiler).current
    assert all(m.compiled for m in _binary(models).values())  # at once: nothing was queued
    assert compiler.wait(0) and compiler.compiled == {}


@pytest.mark.slow
def test_a_library_that_differs_from_lightgbm_is_refused(
    cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The parity check at load: the propensity model's library in the place of the uplift control
    model's is refused and removed from the cache, and the control model scores with LightGBM."""
    compiler = ForestCompiler(tmp_path, probe=lambda: None, command=FAILING)
    wrong = ForestCompiler(cache).library(_file_bytes("propensity"))
    shutil.copyfile(wrong, compiler.library(_file_bytes("uplift", "control.txt")))
    with caplog.at_level(logging.WARNING, logger="nextbest.models.compiled"):
        models = _binary(ModelRegistry(MODELS, compiler).current)
        assert compiler.wait(60)
    assert not models["uplift-control"].compiled
    assert not compiler.library(_file_bytes("uplift", "control.txt")).exists()
    assert any("differs from LightGBM" in r.getMessage() for r in caplog.records)


def _file_bytes(kind: str, name: str = "model.txt") -> bytes:
    version = (MODELS / kind / "PROMOTED").read_text().strip()
    return (MODELS / kind / version / name).read_bytes()


def test_without_a_compiler_lightgbm_scores_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="nextbest.models.compiled"):
        registry = ModelRegistry(MODELS, ForestCompiler(tmp_path, probe=lambda: "no C compiler on PATH"))
    models = _binary(registry.current)
    assert not any(m.compiled for m in models.values())
    lines = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert lines == ["compiled scoring unavailable (no C compiler on PATH): models score with LightGBM"]
    x = _rows(models["propensity"], 500, seed=1)
    expected = models["propensity"].booster.predict(x, num_threads=1)
    assert np.max(np.abs(models["propensity"].predict(x) - expected)) <= TOLERANCE


def test_a_failed_compilation_leaves_lightgbm_scoring(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A compilation that fails (here: the compiling command exits with an error) is logged once per
    model, and the model keeps scoring with LightGBM; nothing is left in the cache."""
    compiler = ForestCompiler(tmp_path, probe=lambda: None, command=FAILING)
    with caplog.at_level(logging.WARNING, logger="nextbest.models.compiled"):
        registry = ModelRegistry(MODELS, compiler)
        assert compiler.wait(60)
        registry.reload()  # the same models again: not retried, not logged again
        assert compiler.wait(60)
    assert not any(m.compiled for m in _binary(registry.current).values())
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == len(FORESTS) and all("the compiler crashed" in f for f in failures)
    assert not list(tmp_path.glob("*.so"))


def test_array_addresses_are_numpys_also_for_read_only_and_empty_arrays() -> None:
    writable = np.arange(12.0).reshape(3, 4)
    read_only = np.arange(4.0)
    read_only.flags.writeable = False
    for a in (writable, read_only, np.empty((0, 4)), np.empty(0)):
        assert _address(a) == a.ctypes.data


def test_lightgbm_forest_predicts_read_only_rows_as_writable_ones() -> None:
    registry = ModelRegistry(bundled_models_path())
    model = registry.current.propensity
    assert model is not None
    x = probe_rows(model.booster.model_to_string(), model.num_feature, rows=64)
    forest = LightGBMForest(model.booster)
    expected = model.booster.predict(x, num_threads=1)
    frozen = x.copy()
    frozen.flags.writeable = False
    for rows in (x, frozen):
        assert np.array_equal(forest.predict(rows), expected, equal_nan=True)
    assert forest.predict(x[:0]).shape == (0,)
