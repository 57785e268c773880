"""Uplift on Hillstrom: do the uplift learners target better than propensity and than random?

Women's e-mail vs no e-mail (42,693 randomized customers), outcome visit and conversion; for each of five
seeds a random 75/25 split, each uplift learner (``nextbest.training.fit.LEARNERS``) trained on the 75 %
(early-stopped on a slice of it), the one ``nextbest train`` would keep (the best Qini on that slice), and
the Qini coefficient of the rankings on the held-out 25 %: predicted uplift, the treated model's
P(outcome | e-mail) (what a propensity model targets), and random (the mean of 20 shuffles). Intervals:
95 % t-intervals over the seeds, of each ranking's Qini and of its paired difference to propensity and
to random.

    .venv/bin/python benchmarks/bench_uplift_hillstrom.py [--csv tests/data/hillstrom.csv] [--seeds 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from scipy import stats

from nextbest.training.datasets import from_csv, load_schema
from nextbest.training.fit import LEARNERS, train_uplift

HERE = Path(__file__).resolve().parent


def _ci(values: list[float]) -> str:
    mean = statistics.mean(values)
    half = float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:.5f} [{mean - half:.5f}, {mean + half:.5f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default=str(HERE.parent / "tests" / "data" / "hillstrom.csv"))
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    seeds = range(1, args.seeds + 1)
    schema = load_schema(HERE / "hillstrom.yaml")
    print(
        f"| outcome | ranking | Qini, mean [95 % CI] over {args.seeds} seeds | minus propensity [95 % CI] "
        "| minus random [95 % CI] | beats propensity | beats random |"
    )
    print("|---|---|---|---|---|---|---|")
    curves = {}
    for outcome in ("visit", "conversion"):
        data = from_csv(Path(args.csv), schema, outcome)
        rankings: dict[str, list[float]] = {}
        chosen: list[str] = []
        for seed in seeds:
            for learner in (*LEARNERS, None):
                card = train_uplift(data, seed, learner=learner).card
                metrics = card.metrics["test"]
                name = f"uplift, {learner}" if learner else "uplift, selected"
                rankings.setdefault(name, []).append(metrics["qini"]["uplift_model"])
                if learner is None:
                    chosen.append(card.params["learner"])
                    rankings.setdefault("propensity ranking", []).append(
                        metrics["qini"]["propensity_ranking"]
                    )
                    rankings.setdefault("random", []).append(metrics["qini"]["random"])
                    if seed == 1:
                        curves[outcome] = metrics["qini_curve"]
        prop, rand = rankings["propensity ranking"], rankings["random"]
        for name, values in rankings.items():
            minus_p = [v - p for v, p in zip(values, prop, strict=True)]
            minus_r = [v - r for v, r in zip(values, rand, strict=True)]
            vs_p = _ci(minus_p) if name != "propensity ranking" else "—"
            vs_r = _ci(minus_r) if name != "random" else "—"
            wins = (
                f"{sum(d > 0 for d in minus_p)}/{len(values)} | {sum(d > 0 for d in minus_r)}/{len(values)}"
            )
            print(f"| {outcome} | {name} | {_ci(values)} | {vs_p} | {vs_r} | {wins} |")
        print(f"| {outcome} | (selected learner per seed: {', '.join(chosen)}) | | | | | |")
    for outcome, curve in curves.items():
        print(
            f"\nQini curve, {outcome}, seed 1, selected learner "
            f"(incremental {outcome}s per customer when targeting the top share):"
        )
        print("| targeted | " + " | ".join(f"{f:.0%}" for f in curve["fraction"]) + " |")
        print("|---|" + "---|" * len(curve["fraction"]))
        for name in ("uplift_model", "propensity_ranking", "random"):
            print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in curve[name]) + " |")


if __name__ == "__main__":
    main()
