"""Where the uplift policy loses to the blind-deadline ceiling: its gain against the true gain, per action.

``bench_decision_quality.py``'s ``uplift`` policy (the bundled, or ``--models-dir``, models; the bundled
catalog minus its experiments; each population in memory), played once more with its uplift model
wrapped: for every cart candidate the engine scores, the wrapper records the gain the engine computes
from the model (``P(treated) x value x kept - P(untreated) x value - cost``, ``decision/scoring.py``) and
the true gain the ``oracle-blind-deadline`` rule computes for the same candidate at the same moment (the
exact incremental revenue of sending it, less the expected unsubscribe cost and the send cost, for a
customer whose hidden traits and cart deadline are replaced by what the store's data shows: the ceiling
a model of the store's data could reach). The wrapper returns the model's own scores, so the decisions
are the policy's (its net equals the benchmark's ``uplift`` row).

Per action it reports the two gains' means and spreads, their correlation, the least-squares line of
the true gain on the learned one, and the first-order loss of the learned decision: the true gain given
away by sends whose true gain is negative, and the true gain missed by the candidates not sent whose true
gain is positive.

``--calibrate`` then bounds what a per-action **linear correction** of the learned gain could earn: it
fits each action's line on the first population (with the truth, which no store has) and plays every
population again with the corrected gain (``a + b x gain``, handed to the engine as the P(treated) that
gives it). It is a diagnostic bound, not a policy: a store would fit the line on its randomized holdouts.

    .venv/bin/python benchmarks/audit_uplift_gain.py [--policy-seeds 31,32,33] [--models-dir DIR] \
        [--calibrate]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import bench_decision_quality as bq  # the script's folder is on the path
from nextbest.catalog import Action, Catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.models.artifacts import bundled_models_path
from nextbest.models.registry import ModelRegistry, ModelSet, UpliftModel
from nextbest.simulate import EngineBackend, Simulator, population
from nextbest.store import MemoryStore


@dataclass(frozen=True)
class _Audited(UpliftModel):
    """The learned uplift model (its fields copied), recording each scored candidate's learned and true
    gains; with ``lines`` ({action: (a, b)}) it hands the engine ``a + b x`` the learned gain instead."""

    truth: bq._OracleUplift | None = None
    by_id: dict[str, Action] = field(default_factory=dict)
    lines: dict[str, Any] = field(default_factory=dict)
    records: list[tuple[str, float, float]] = field(default_factory=list)

    def score(
        self, full: npt.NDArray[np.float64], action_ids: Sequence[str]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        assert self.truth is not None
        treated, control = super().score(full, action_ids)
        true, _ = self.truth.score(full, action_ids)
        request = self.truth.local.current.request
        treated = np.array(treated, dtype=np.float64)
        for i, action_id in enumerate(action_ids):
            action = self.by_id[action_id]
            value, keep = action.value_for(request.cart_value), 1.0 - action.discount
            learned = treated[i] * value * keep - control[i] * value - action.cost
            # The oracle's score is its gain before the send cost, per unit at stake (its docstring).
            self.records.append((action_id, learned, true[i] * value * keep - action.cost))
            if action_id in self.lines:
                a, b = self.lines[action_id]
                treated[i] = (a + b * learned + control[i] * value + action.cost) / (value * keep)
        return treated, np.asarray(control, dtype=np.float64)


def play(
    seed: int,
    *,
    registry: ModelRegistry,
    trained: ModelSet,
    catalog: Catalog,
    lines: dict[str, Any],
    customers: int,
    days: int,
) -> tuple[float, dict[str, int], list[tuple[str, float, float]]]:
    """Plays population ``seed`` with ``trained``'s uplift model audited (served through ``registry``)."""
    truth = bq._OracleUplift(catalog, blind=True, deadline=False)
    assert trained.uplift is not None
    learned = {f.name: getattr(trained.uplift, f.name) for f in fields(UpliftModel)}
    audited = _Audited(**learned, truth=truth, by_id={a.id: a for a in catalog.actions}, lines=lines)
    registry.current = replace(trained, uplift=audited)
    engine = DecisionEngine(catalog, MemoryStore(), models=registry)
    result = Simulator(
        EngineBackend(engine),
        population(customers, seed),
        days=days,
        seed=seed,
        shards=1,  # the oracle's context is per thread
        max_actions=4,
        before_decide=truth.set,
    ).run()
    costs = {a.id: a.cost for a in catalog.actions}
    incremental = sum(c.expected_revenue(c.delivered) - c.expected_revenue([]) for c in result.carts)
    net = (
        incremental
        - bq.UNSUBSCRIBE_COST * result.expected_unsubscribes
        - sum(costs.get(a, 0.0) * n for a, n in result.delivered_by_action.items())
    )
    covered = {a for a, _, _ in audited.records}
    return net, {a: n for a, n in sorted(result.delivered_by_action.items()) if a in covered}, audited.records


def per_action(records: list[tuple[str, float, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for action in sorted({r[0] for r in records}):
        learned = np.array([r[1] for r in records if r[0] == action])
        true = np.array([r[2] for r in records if r[0] == action])
        slope, intercept = np.polyfit(learned, true, 1)
        out[action] = {
            "candidates": len(learned),
            "learned_mean": float(learned.mean()),
            "learned_sd": float(learned.std()),
            "true_mean": float(true.mean()),
            "true_sd": float(true.std()),
            "correlation": float(np.corrcoef(learned, true)[0, 1]),
            "line_a": float(intercept),
            "line_b": float(slope),
            "sent": int((learned > 0).sum()),
            "truly_positive": int((true > 0).sum()),
            "lost_on_sends": float(-true[(learned > 0) & (true < 0)].sum()),
            "missed": float(true[(learned <= 0) & (true > 0)].sum()),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy-seeds", default="31,32,33")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--models-dir", default="")
    parser.add_argument("--calibrate", action="store_true", help="also bound a per-action linear correction")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.policy_seeds.split(",") if s]
    catalog = bq._plain_catalog()
    registry = ModelRegistry(Path(args.models_dir) if args.models_dir else bundled_models_path())
    trained = registry.current
    if trained.uplift is None:
        raise SystemExit("the uplift model did not load; run `make models`")
    results: dict[str, Any] = {"models": trained.uplift.card.version, "seeds": {}}
    first: list[tuple[str, float, float]] = []
    for seed in seeds:
        net, sends, records = play(
            seed,
            registry=registry,
            trained=trained,
            catalog=catalog,
            lines={},
            customers=args.customers,
            days=args.days,
        )
        first = first or records
        table = per_action(records)
        results["seeds"][seed] = {"net": net, "per_action": table}
        print(f"seed {seed}: net {net:,.0f}", flush=True)
        for action, row in table.items():
            print(
                f"  {action:<22} n {row['candidates']:>5,}  learned {row['learned_mean']:+.3f} (sd "
                f"{row['learned_sd']:.3f})  true {row['true_mean']:+.3f} (sd {row['true_sd']:.3f})  corr "
                f"{row['correlation']:.3f}  true = {row['line_a']:+.3f} + {row['line_b']:.3f} x learned  "
                f"sent {row['sent']:,} (truly positive {row['truly_positive']:,})  lost on sends "
                f"{row['lost_on_sends']:,.0f}, missed {row['missed']:,.0f}"
            )
    if args.calibrate:
        lines = {a: (row["line_a"], row["line_b"]) for a, row in per_action(first).items()}
        results["lines"] = lines
        print(f"a per-action line fitted on seed {seeds[0]} with the truth: {json.dumps(lines)}")
        for seed in seeds:
            net, sends, _ = play(
                seed,
                registry=registry,
                trained=trained,
                catalog=catalog,
                lines=lines,
                customers=args.customers,
                days=args.days,
            )
            before = results["seeds"][seed]["net"]
            results["seeds"][seed]["net_calibrated"] = net
            print(
                f"seed {seed}: net {net:,.0f} corrected against {before:,.0f} ({net - before:+,.0f}); {sends}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
