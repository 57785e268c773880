"""Calibration of every interval the stats engine reports, by simulation (issue 21's acceptance).

For each kind of metric (proportion, lognormal mean, CUPED with a strong covariate at a 30 % effect, ratio)
at ≈ 100 and ≈ 10,000 units per arm: the share of 1,000 seeded experiments whose 95 % interval covers the
true absolute and relative lift, the relative interval by Fieller (the engine's), by the delta method and
by the delta method on the log scale, and the A/A false-positive rate; then A/A with daily peeking,
fixed-horizon against sequential. Prints a Markdown table for benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_calibration.py [--experiments 1000] [--seed 2112]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.stats.simulation import KINDS, coverage, peeking

LIFTS = {"proportion": 0.1, "mean": 0.1, "cuped": 0.3, "cuped-additive": 0.3, "ratio": 0.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2112)
    args = parser.parse_args()
    count, started = args.experiments, time.perf_counter()
    print(f"{count} experiments per row, seed {args.seed}; 95 % intervals; in range: [93.6 %, 96.4 %]\n")
    print(
        "| metric | units/arm | lift | absolute | relative (Fieller) | relative (delta) "
        "| relative (log delta) | A/A false positives |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for index, kind in enumerate(KINDS):
        for n in (100, 10_000):
            seed = args.seed + 10 * index + (n > 100)
            effect = coverage(kind, n, LIFTS[kind], count, seed)
            null = coverage(kind, n, 0.0, count, seed + 5)
            print(
                f"| {kind} | {n:,} | {LIFTS[kind]:.0%} | {effect.absolute:.1%} | {effect.relative:.1%} "
                f"| {effect.relative_delta:.1%} | {effect.relative_log:.1%} | {null.positives:.1%} |",
                flush=True,
            )
    fixed, sequential = peeking(count, args.seed + 99)
    print(
        f"\nA/A with a look every day for 14 days (100 lognormal units per arm per day): any look "
        f"significant at 0.05 — fixed-horizon {fixed:.1%}, sequential (tuning 2,000) {sequential:.1%}"
    )
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
