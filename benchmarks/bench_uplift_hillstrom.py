"""Uplift on Hillstrom: does the two-model uplift learner target better than propensity and than random?

Women's e-mail vs no e-mail (42,693 randomized customers), outcome visit and conversion; for each of five
seeds a random 75/25 split, the T-learner trained on the 75 % (early-stopped on a slice of it), and the
Qini coefficient of three rankings on the held-out 25 %: predicted uplift, the treated model's
P(outcome | e-mail) (what a propensity model targets), and random (the mean of 20 shuffles).

    .venv/bin/python benchmarks/bench_uplift_hillstrom.py [--csv tests/data/hillstrom.csv]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from nextbest.training.datasets import from_csv, load_schema
from nextbest.training.fit import train_uplift

HERE = Path(__file__).resolve().parent
SEEDS = (1, 2, 3, 4, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default=str(HERE.parent / "tests" / "data" / "hillstrom.csv"))
    args = parser.parse_args()
    schema = load_schema(HERE / "hillstrom.yaml")
    print(
        "| outcome | ranking | Qini coefficient, mean (sd) over 5 seeds | beats random | beats propensity |"
    )
    print("|---|---|---|---|---|")
    curves = {}
    for outcome in ("visit", "conversion"):
        data = from_csv(Path(args.csv), schema, outcome)
        results = {"uplift_model": [], "propensity_ranking": [], "random": []}
        for seed in SEEDS:
            metrics = train_uplift(data, seed).card.metrics["test"]
            for name, values in results.items():
                values.append(metrics["qini"][name])
            if seed == SEEDS[0]:
                curves[outcome] = metrics["qini_curve"]
        for name, values in results.items():
            beats_random = sum(v > r for v, r in zip(values, results["random"], strict=True))
            beats_prop = sum(v > p for v, p in zip(values, results["propensity_ranking"], strict=True))
            print(
                f"| {outcome} | {name} | {statistics.mean(values):.5f} ({statistics.stdev(values):.5f}) "
                f"| {beats_random}/5 | {beats_prop}/5 |"
            )
    for outcome, curve in curves.items():
        print(
            f"\nQini curve, {outcome}, seed {SEEDS[0]} "
            f"(incremental {outcome}s per customer when targeting the top share):"
        )
        print("| targeted | " + " | ".join(f"{f:.0%}" for f in curve["fraction"]) + " |")
        print("|---|" + "---|" * len(curve["fraction"]))
        for name in ("uplift_model", "propensity_ranking", "random"):
            print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in curve[name]) + " |")


if __name__ == "__main__":
    main()
