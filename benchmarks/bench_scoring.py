"""Scoring cost of one decision, old against new, on the same inputs in the same run.

Inputs: the bundled models (propensity 98 trees; uplift 210 + 107 trees; send time) and two decisions:
``catalog_20`` — the 9 on-site actions of ``benchmarks/catalog_20.yaml`` that the NextAction benchmark's
customers (no consent to e-mail, SMS or push) are scored on, propensity only — and ``cart`` — the bundled
catalog's ``cart_abandoned`` actions, where the uplift model scores too. A customer with 60 past sends.

Rows, each timed in alternating rounds (the median of the rounds' per-call means; the machine is shared):

- ``predict``: the propensity model on 1, 9 and 20 rows — LightGBM's C predict called directly (what
  the server did) against the compiled trees;
- ``features``: the model input, row by row (``customer_row`` + ``action_columns`` per candidate +
  ``logged_matrix`` + ``matrix``, the path up to commit d257750) against one step (``candidate_matrix``
  + the model's ``Layout.select``), both with the logged bytes;
- ``score_candidates``: the whole stage with LightGBM forests against compiled ones (this tree);
- with ``--base REV``: ``score_candidates`` of commit REV (in a git worktree, a child process on the same
  inputs) against this tree's, alternating.

Also the compile time of each bundled model into an empty cache, and the time to load all three from the
cache (what a restart pays). ``--stage NAME --calls N`` runs one stage only, for callgrind:

    .venv/bin/python benchmarks/bench_scoring.py [--rounds 15] [--calls 2000] [--base d257750~1]
    valgrind --tool=callgrind --toggle-collect=starmap_next .venv/bin/python benchmarks/bench_scoring.py \
        --stage score-compiled --calls 200      # instructions per call: Collected / 200
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from nextbest.catalog import bundled_catalog_path, load_catalog
from nextbest.decision.candidates import Candidate
from nextbest.decision.scoring import score_candidates
from nextbest.domain import ActionClass, Channel, DecisionRequest, RequestContext
from nextbest.models import ModelRegistry, bundled_models_path
from nextbest.models import features as feats
from nextbest.state import ChannelState, CustomerSnapshot, CustomerState, Journey, PastExposure

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 23, 15, tzinfo=UTC)
Inputs = dict[str, dict[str, Any]]


def decisions() -> Inputs:
    """The two decisions' arguments to ``score_candidates`` (only APIs older commits have too)."""
    out: Inputs = {}
    for name, path, trigger, keep in (
        ("catalog_20", ROOT / "benchmarks" / "catalog_20.yaml", "bench_trigger", {Channel.ONSITE}),
        ("cart", bundled_catalog_path(), "cart_abandoned", set(Channel)),
    ):
        catalog = load_catalog(path)
        actions = [a for a in catalog.actions if trigger in a.triggers and a.channel in keep]
        out[name] = {
            "candidates": [Candidate.of(a, Journey(active=False)) for a in actions],
            "now": NOW,
            "snapshot": _snapshot(catalog.actions),
            "request": DecisionRequest(
                "r", "u1", trigger, NOW, RequestContext(cart_value=80.0, product_ids=("p1", "p2"))
            ),
            "zone": catalog.policy.time_zone,
        }
    return out


def _snapshot(actions: Any) -> CustomerSnapshot:
    rng = np.random.default_rng(7)
    marketing = [a for a in actions if a.action_class is not ActionClass.TRANSACTIONAL]
    history = []
    for i in range(60):
        a = marketing[int(rng.integers(len(marketing)))]
        at = NOW - timedelta(seconds=float(rng.uniform(0, 90 * 86400)))
        history.append(
            PastExposure(
                uuid.UUID(int=i).hex, a.id, a.flow, a.channel, a.action_class, sorted(a.triggers)[0],
                at, at + a.delay, i + 1, cancelled=3 <= i < 6,
            )
        )  # fmt: skip
    history.sort(key=lambda p: p.occurred_at, reverse=True)
    state = CustomerState(
        "u1",
        first_seen_at=NOW - timedelta(days=400),
        orders_count=6,
        revenue_total=640.0,
        last_order_at=NOW - timedelta(days=30),
        last_engagement_at=NOW - timedelta(days=2),
        channels=MappingProxyType({Channel.ONSITE: ChannelState(consent=True)}),
        engagement_hours=MappingProxyType({40: 3, 64: 2, 160: 1}),
    )
    return CustomerSnapshot(state, tuple(history))


def _per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - start) / calls / 1000


def _rounds(variants: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, list[float]]:
    for fn in variants.values():
        _per_call(fn, max(calls // 10, 10))
    out: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            out[name].append(_per_call(fn, calls))
    return out


def _registries(cache: Path) -> tuple[Any, Any, dict[str, float], tuple[float, float]]:
    """LightGBM models, compiled models, each model's compile time, and the time to load the registry
    without compiled trees and with them from the cache."""
    # Imported here: the --base child imports this module on commits that predate it.
    from nextbest.models.compiled import ForestCompiler

    started = time.perf_counter()
    lightgbm = ModelRegistry(bundled_models_path())
    cold = time.perf_counter() - started
    compiler = ForestCompiler(cache)
    if compiler.unavailable is not None:
        raise SystemExit(f"compiled scoring unavailable: {compiler.unavailable}")
    ModelRegistry(bundled_models_path(), compiler)
    if not compiler.wait(1800):
        raise SystemExit("compilation did not finish in 30 minutes")
    started = time.perf_counter()
    compiled = ModelRegistry(bundled_models_path(), ForestCompiler(cache))
    warm = time.perf_counter() - started
    models = compiled.current
    assert models.propensity.compiled and models.uplift.treated.compiled and models.uplift.control.compiled
    return lightgbm.current, models, dict(compiler.compiled), (cold, warm)


def _features_row_by_row(args: dict[str, Any], model: Any) -> object:
    candidates, request = args["candidates"], args["request"]
    customer = feats.customer_row(args["snapshot"], request, args["now"], args["zone"])
    logged = feats.logged_matrix(
        customer, [feats.action_columns(c.action, c.channel, c.delay) for c in candidates]
    )
    feats.encode_rows(logged)
    return feats.matrix(logged, [c.action.id for c in candidates], model.codes)


def _features_one_step(args: dict[str, Any], model: Any) -> object:
    candidates, request = args["candidates"], args["request"]
    customer = feats.customer_row(args["snapshot"], request, args["now"], args["zone"])
    full = feats.candidate_matrix(
        customer,
        [
            (feats.channel_code(c.channel), *c.action.scoring_constants, c.delay.total_seconds() / 3600.0)
            for c in candidates
        ],
    )
    feats.encode_rows(full)
    return model.layout.select(full, [c.action.id for c in candidates], model.codes)


CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import bench_scoring as b
from nextbest.models import ModelRegistry
from nextbest.decision.scoring import score_candidates
models = ModelRegistry(b.ROOT / "models").current  # this checkout's models, whatever the commit
inputs = b.decisions()
calls = int(sys.argv[2])
out = {}
for name, args in inputs.items():
    fn = lambda: score_candidates(**args, models=models)
    b._per_call(fn, calls // 10)
    out[name] = b._per_call(fn, calls)
print(json.dumps(out))
"""


def _child(src: Path, calls: int, compiled_cache: Path | None) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    script = CHILD
    if compiled_cache is not None:  # this tree, with compiled trees from the cache
        script = script.replace(
            'models = ModelRegistry(b.ROOT / "models").current',
            "from nextbest.models.compiled import ForestCompiler\n"
            f"cache = b.Path({str(compiled_cache)!r})\n"
            'models = ModelRegistry(b.ROOT / "models", ForestCompiler(cache)).current',
        )
    done = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "benchmarks"), str(calls)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _stage(name: str, calls: int) -> None:
    cache = Path(tempfile.gettempdir()) / "nextbest-bench-scoring-cache"
    lightgbm, compiled, _, _ = _registries(cache)
    args = decisions()["catalog_20"]
    x = _features_one_step(args, compiled.propensity)
    fn: Callable[[], object] = {
        "features-row-by-row": lambda: _features_row_by_row(args, lightgbm.propensity),
        "features-one-step": lambda: _features_one_step(args, compiled.propensity),
        "predict-lightgbm": lambda: lightgbm.propensity.forest.predict(x),
        "predict-compiled": lambda: compiled.propensity.forest.predict(x),
        "score-lightgbm": lambda: score_candidates(**args, models=lightgbm),
        "score-compiled": lambda: score_candidates(**args, models=compiled),
    }[name]
    for _ in range(50):
        fn()
    collections.deque(itertools.starmap(fn, [()] * calls), maxlen=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--base", help="also compare score_candidates against this commit")
    parser.add_argument("--stage", help="run one stage --calls times, for callgrind")
    args = parser.parse_args()
    if args.stage:
        _stage(args.stage, args.calls)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        lightgbm, compiled, compile_s, (plain_s, warm_s) = _registries(Path(tmp))
        inputs = decisions()
        rows: list[tuple[str, str, str, list[float], list[float]]] = []
        x20 = _features_one_step({**inputs["catalog_20"]}, compiled.propensity)
        x20 = np.ascontiguousarray(np.concatenate([x20, x20, x20])[:20])
        for n in (1, 9, 20):
            x = np.ascontiguousarray(x20[:n])
            assert np.array_equal(
                lightgbm.propensity.forest.predict(x), compiled.propensity.forest.predict(x)
            )
            r = _rounds(
                {
                    "old": lambda x=x: lightgbm.propensity.forest.predict(x),
                    "new": lambda x=x: compiled.propensity.forest.predict(x),
                },
                args.rounds,
                args.calls,
            )
            rows.append(
                (f"propensity predict, {n} rows", "LightGBM C predict", "compiled", r["old"], r["new"])
            )
        for name, decision in inputs.items():
            n = len(decision["candidates"])
            model = compiled.propensity
            same = np.array_equal(
                _features_row_by_row(decision, model), _features_one_step(decision, model), equal_nan=True
            )
            assert same, name
            r = _rounds(
                {
                    "old": lambda d=decision, m=model: _features_row_by_row(d, m),
                    "new": lambda d=decision, m=model: _features_one_step(d, m),
                },
                args.rounds,
                args.calls,
            )
            rows.append((f"features, {name} ({n} candidates)", "row by row", "one step", r["old"], r["new"]))
            r = _rounds(
                {
                    "old": lambda d=decision: score_candidates(**d, models=lightgbm),
                    "new": lambda d=decision: score_candidates(**d, models=compiled),
                },
                args.rounds,
                args.calls,
            )
            rows.append((f"score_candidates, {name}", "LightGBM forests", "compiled", r["old"], r["new"]))
        if args.base:
            with tempfile.TemporaryDirectory() as wt:
                tree = Path(wt) / "base"
                subprocess.run(
                    ["git", "worktree", "add", "--detach", "-q", str(tree), args.base], cwd=ROOT, check=True
                )
                try:
                    old: dict[str, list[float]] = collections.defaultdict(list)
                    new: dict[str, list[float]] = collections.defaultdict(list)
                    for _ in range(max(3, args.rounds // 3)):
                        for k, v in _child(tree / "src", args.calls, None).items():
                            old[k].append(v)
                        for k, v in _child(ROOT / "src", args.calls, Path(tmp)).items():
                            new[k].append(v)
                finally:
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
            for name, before in old.items():
                rows.append(
                    (
                        f"score_candidates, {name}",
                        f"commit {args.base}",
                        "this tree, compiled",
                        before,
                        new[name],
                    )
                )
    print(f"models: {dict(compiled.versions)}")
    print(f"{os.cpu_count()} CPUs; {args.rounds} rounds x {args.calls} calls per row (median of round means)")
    print("| what | old | new | old µs | new µs | new / old |")
    print("|---|---|---|---:|---:|---:|")
    for what, o_name, n_name, o, n in rows:
        om, nm = statistics.median(o), statistics.median(n)
        print(f"| {what} | {o_name} | {n_name} | {om:.1f} | {nm:.1f} | {nm / om:.2f} |")
    print(
        "\ncompile (empty cache, one model at a time, nice 10): "
        + ", ".join(f"{k[:8]} {v:.1f} s" for k, v in compile_s.items())
    )
    print(
        f"registry load: {plain_s * 1000:.0f} ms with LightGBM only, {warm_s * 1000:.0f} ms with the three "
        "compiled models loaded from the cache and checked"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
