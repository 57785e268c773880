"""Scoring cost of one decision: 20 candidate actions, a 100-tree propensity model and send time.

Measures, in the same run: LightGBM's own ``predict`` on the 20 rows (one thread, the floor), the whole
``score_candidates`` (features, propensity batch, send-time profile, logged feature bytes), and both again
while another process keeps a core busy — with LightGBM pinned to one thread (what the server does) and
with its default OpenMP threads (what it would do otherwise).

    .venv/bin/python benchmarks/bench_scoring.py [--calls 5000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import lightgbm as lgb
import numpy as np

from nextbest.catalog import load_catalog
from nextbest.decision.candidates import Candidate
from nextbest.decision.scoring import score_candidates
from nextbest.domain import Channel, DecisionRequest, RequestContext
from nextbest.models import features as feats
from nextbest.models.artifacts import ModelCard, ModelKind
from nextbest.models.registry import BinaryModel, ModelSet
from nextbest.models.send_time import HOURS_OF_WEEK, SendTimeModel
from nextbest.state import CustomerSnapshot, CustomerState, Journey

HERE = Path(__file__).resolve().parent
NOW = datetime(2026, 11, 23, 10, tzinfo=UTC)


def _model(actions: list[str]) -> BinaryModel:
    rng = np.random.default_rng(1)
    n = 20000
    x = feats.matrix(
        rng.normal(size=(n, len(feats.LOGGED))), list(rng.choice(actions, n)), feats.action_codes(actions)
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-x[:, 0] - 0.5 * x[:, 3]))).astype(float)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "num_threads": 1, "seed": 1},
        lgb.Dataset(x, y, feature_name=list(feats.FEATURES), categorical_feature=list(feats.CATEGORICAL)),
        num_boost_round=100,
    )
    card = ModelCard(
        kind=ModelKind.PROPENSITY,
        version="bench",
        feature_set=feats.FEATURE_SET,
        features=list(feats.FEATURES),
        categorical=list(feats.CATEGORICAL),
        categories={feats.ACTION: actions},
        files={},
        sha256={},
    )
    return BinaryModel(booster, card, feats.action_codes(actions))


def _busy(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    while not stop.is_set():
        sum(i * i for i in range(10000))


def _time(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    catalog = load_catalog(HERE / "catalog_20.yaml")
    actions = list(catalog.actions)[:20]
    model = _model([a.id for a in actions])
    population = np.ones(HOURS_OF_WEEK) / HOURS_OF_WEEK
    models = ModelSet(propensity=model, send_time=SendTimeModel(population, 10.0))
    journey = Journey(active=False)
    candidates = [Candidate.of(a, journey) for a in actions]
    # Every candidate optimizes its send time, so the profile is built (once per decision).
    candidates = [replace(c, action=replace(c.action, send_time="optimize")) for c in candidates]
    state = CustomerState(
        "u1",
        first_seen_at=NOW - timedelta(days=200),
        orders_count=3,
        revenue_total=240.0,
        last_order_at=NOW - timedelta(days=20),
        engagement_hours=MappingProxyType({40: 3, 64: 2, 160: 1}),
    )
    snapshot = CustomerSnapshot(state)
    request = DecisionRequest(
        "r",
        "u1",
        "cart_abandoned",
        NOW,
        RequestContext(cart_value=80.0, product_ids=("p1",)),
        (Channel.EMAIL,),
    )
    zone = catalog.policy.time_zone
    x = feats.matrix(
        [
            feats.customer_row(snapshot, request, NOW, zone)
            + feats.action_columns(c.action, c.channel, c.delay)
            for c in candidates
        ],
        [c.action.id for c in candidates],
        model.codes,
    )
    booster = model.booster

    def predict_one_thread() -> object:
        return booster.predict(x, num_threads=1)

    def predict_default_threads() -> object:
        return booster.predict(x)

    def score() -> object:
        return score_candidates(candidates, NOW, snapshot=snapshot, request=request, zone=zone, models=models)

    scored, _ = score()
    assert len(scored) == 20 and all(s.timing is not None for s in scored)
    # The served path must predict what LightGBM predicts.
    served = np.array([s.score / s.action.value for s in scored if s.action.value > 0])
    direct = booster.predict(x, num_threads=1)[[i for i, c in enumerate(candidates) if c.action.value > 0]]
    assert np.max(np.abs(served - direct)) < 1e-9
    rows = []
    for name, fn in (
        ("LightGBM predict, 20 rows, 1 thread", predict_one_thread),
        ("score_candidates: features + propensity + send time", score),
        ("LightGBM predict, 20 rows, default threads", predict_default_threads),
    ):
        _time(fn, 200)  # warm up
        quiet = _time(fn, args.calls)
        stop = multiprocessing.Event()
        burners = [multiprocessing.Process(target=_busy, args=(stop,)) for _ in range(1)]
        for b in burners:
            b.start()
        time.sleep(0.3)
        loaded = _time(fn, args.calls)
        stop.set()
        for b in burners:
            b.join()
        rows.append((name, quiet, loaded))
    print(f"{args.calls} calls each, 100 trees x 15 leaves, {len(feats.FEATURES)} features, 20 candidates")
    print("| path | median µs | p99 µs | median µs, 1 busy process | p99 µs, 1 busy process |")
    print("|---|---|---|---|---|")
    for name, (qm, qp), (lm, lp) in rows:
        print(f"| {name} | {qm:.0f} | {qp:.0f} | {lm:.0f} | {lp:.0f} |")


if __name__ == "__main__":
    main()
