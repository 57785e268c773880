"""Send time against a fixed hour: the bundled catalog's send-time experiments, truth and lift report.

Each population (``--seeds``) plays the simulated store (``nextbest.simulate``) through the decision engine
in process, on a fresh SQLite store, with the bundled catalog (its experiments included) and the bundled
models. The catalog tests each non-urgent e-mail's send time in an experiment of its own (``fixed_hour``:
sent when due; ``best_hour``: at the customer's best hour in the send window, from the send-time model),
both arms logged with their assignment probability. For each experiment it reports:

- **truth per message**: for every e-mail the best-hour arm sent, the exact expected revenue of its order
  (``world.Touch``: P(order | delivered at that hour) x typical basket) at the hour it was sent minus at
  the hour it was due — what the send time earned on that message; the mean, its relative lift
  (sum of P(order) at the best hour / when due - 1) and how many were moved off the due hour;
- **truth per unit**: the simulator's true effect of the arm in the lift report's terms (revenue per unit
  over the attribution window, ``simulate.truth``);
- **the lift report** from the logged exposures (``build_report``, revenue per unit, the headline
  comparison): estimate, 95 % interval, units per arm, and the units per arm needed to detect the true
  per-unit effect with 80 % power at alpha 0.05 (``stats.power.minimum_detectable_effect``: the MDE falls
  as 1/sqrt(n)).

Over the populations: each flow's truth per message and per unit with a 95 % t-interval.

The campaign e-mails (win-back, VIP early access, Black Friday) answer ``scheduled`` with no cart: the
store's campaign job (``--campaign-days``, at ``--campaign-hour`` UTC; the simulator's ``campaigns``)
asks about every customer at those moments, one batch for everyone, as a store sends them; each e-mail's
send-time test (``send_time_winback``, ``send_time_vip``, and ``send_time_promo``, which the bench adds:
the catalog does not carry it) is measured like the
lifecycle ones. ``--campaign-days ''`` runs no campaign job (the lifecycle store alone). The default days
are 1, 8 and 16, not 1, 8 and 15: with the VIP e-mail's 14-day cooldown a job exactly 14 days after the
first lets the fixed-hour arm send again but not the best-hour arm (its first e-mail went out hours
later), which would measure the job's cadence, not the hour.

``--day-pooling`` sets the send-time model's ``day_pooling`` (each customer's opens counted at their hour
on every day of the week, a seventh each, instead of only on the weekday they happened — a 12 h send
window rarely holds the weekday-hour of one of a customer's few opens): ``model`` (default) as the
bundled model was trained (training keeps pooling when it predicts the validation period better),
``on`` or ``off`` to measure the other choice on the same model.

    .venv/bin/python benchmarks/bench_send_time.py [--customers 2000] [--days 21] [--seeds 31,32,33]
        [--campaign-days 1,8,16] [--campaign-hour 14] [--day-pooling model|on|off] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from scipy import stats as st

from nextbest.catalog import Catalog, bundled_catalog_path, parse_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.models.artifacts import bundled_models_path
from nextbest.models.registry import ModelRegistry, ModelSet
from nextbest.reports import ReportRequest, build_report
from nextbest.simulate import EngineBackend, Simulator, population
from nextbest.simulate.truth import experiment_truth
from nextbest.stats.power import minimum_detectable_effect
from nextbest.store import Database, Store, upgrade

OUT = Path(__file__).with_name("send_time.json")
HOUR = timedelta(hours=1)


def _interval(values: list[float]) -> tuple[float, float, float]:
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(st.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


class _Serving:
    """A registry stand-in serving one model set."""

    def __init__(self, models: ModelSet) -> None:
        self.current = models


def _models(day_pooling: str) -> ModelSet:
    """The bundled models; ``day_pooling`` ``on`` or ``off`` sets the send-time model's option."""
    registry = ModelRegistry(bundled_models_path())
    registry.reload()
    models = registry.current
    if models.send_time is None:
        raise SystemExit("no send-time model loaded; run `make models`")
    if day_pooling != "model":
        pooled = replace(models.send_time, day_pooling=day_pooling == "on")
        models = replace(models, send_time=pooled)
    return models


def _model_card(models: ModelSet) -> dict[str, Any]:
    """Which send-time model runs (read with the models, before the populations): its version and
    whether it pools."""
    promoted = bundled_models_path() / "send-time" / "PROMOTED"
    model = models.send_time
    return {
        "promoted": promoted.read_text().strip() if promoted.is_file() else None,
        "day_pooling": bool(model.day_pooling) if model is not None else None,
    }


# Send-time tests the bench adds when the bundled catalog does not run them (a one-off promotion's: too
# few units outside a campaign send for the catalog to carry it), the same arms as the catalog's own.
BENCH_TESTS = {"send_time_promo": "promo_black_friday_email"}


def _catalog() -> Catalog:
    """The bundled catalog with the bench's send-time tests it lacks (``BENCH_TESTS``)."""
    data = yaml.safe_load(bundled_catalog_path().read_text())
    have = {e["id"] for e in data.get("experiments", [])}
    for experiment_id, action_id in BENCH_TESTS.items():
        if experiment_id not in have:
            data.setdefault("experiments", []).append(
                {
                    "id": experiment_id,
                    "scope": {"actions": [action_id]},
                    "arms": [
                        {"id": "fixed_hour", "weight": 0.5, "send_time": "fixed"},
                        {"id": "best_hour", "weight": 0.5, "send_time": "optimize"},
                    ],
                }
            )
    return parse_catalog(yaml.safe_dump(data), "bundled catalog (with the bench's send-time tests)")


def _campaigns(args: argparse.Namespace) -> list[timedelta]:
    """The campaign job's moments: ``--campaign-days`` at ``--campaign-hour`` UTC."""
    days = [int(d) for d in args.campaign_days.split(",") if d.strip()]
    if any(not 0 <= d < args.days for d in days):
        raise SystemExit(
            f"--campaign-days: each day must be in 0..{args.days - 1}, got {args.campaign_days!r}"
        )
    if not 0 <= args.campaign_hour < 24:
        raise SystemExit(f"--campaign-hour: an hour of the day (0..23), got {args.campaign_hour}")
    return [timedelta(days=d, hours=args.campaign_hour) for d in days]


def run_seed(seed: int, args: argparse.Namespace, workdir: Path, models: ModelSet) -> list[dict[str, Any]]:
    catalog = _catalog()
    timed = [e for e in catalog.experiments if e.sets_send_time]
    db = Database(f"sqlite:///{workdir / f'send-time-{seed}.db'}")
    upgrade(db)
    store = Store(db)
    started = time.perf_counter()
    try:
        engine = DecisionEngine(catalog, store, models=_Serving(models))  # type: ignore[arg-type]
        result = Simulator(
            EngineBackend(engine),
            population(args.customers, seed),
            days=args.days,
            seed=seed,
            shards=2,
            campaigns=_campaigns(args),
        ).run()
        seconds = time.perf_counter() - started
        rows = []
        for experiment in timed:
            (action_id,) = experiment.actions
            best = next(a.id for a in experiment.arms if a.send_time == "optimize")
            fixed = next(a.id for a in experiment.arms if a.send_time == "fixed")
            touches = [t for t in result.touches if t.held_by is None and t.message.action_id == action_id]
            in_arm = {arm: [t for t in touches if (experiment.id, arm) in t.scope] for arm in (best, fixed)}
            gains = [t.value * (t.probability() - t.probability(t.due)) for t in in_arm[best]]
            p_best = sum(t.probability() for t in in_arm[best])
            p_due = sum(t.probability(t.due) for t in in_arm[best])
            moved = sum(1 for t in in_arm[best] if t.message.send_at != t.due)
            window = next(a.send_window for a in catalog.actions if a.id == action_id)
            # The headroom: each message at the truly best hour of its send window (a perfect model).
            p_ideal = sum(
                max(t.probability(t.due + timedelta(hours=k)) for k in range(int(window / HOUR) + 1))
                for t in in_arm[best]
            )
            # Per arm: the expected revenue of the orders its e-mails bring (at the hour each was
            # delivered), per unit of the arm. Unlike the truth per message, this counts the e-mails an arm
            # loses or gains downstream (a later send pending longer, cooldowns from a later send), but
            # the units of the two arms differ, so it carries their sampling noise.
            arm_units = {arm: 0 for arm in (best, fixed)}
            for _, arm in result.units.get(experiment.id, {}).values():
                if arm in arm_units:
                    arm_units[arm] += 1
            expected = {
                arm: sum(t.probability() * t.value for t in ts) / arm_units[arm] if arm_units[arm] else None
                for arm, ts in in_arm.items()
            }
            truths = experiment_truth(result, catalog, experiment, as_of=result.end)
            truth = next((t for t in truths if t.arm == best), None)
            request = ReportRequest.validated(experiment.id, as_of=result.end)
            with store.db.reader.connect() as conn:
                report = build_report(conn, catalog, request)
            row: dict[str, Any] = {
                "seed": seed,
                "experiment": experiment.id,
                "action": action_id,
                "messages": {arm: len(ts) for arm, ts in in_arm.items()},
                "units": arm_units,
                "email_revenue_per_unit": expected,
                "email_revenue_per_unit_difference": expected[best] - expected[fixed]
                if expected[best] is not None and expected[fixed] is not None
                else None,
                "moved_off_due_hour": moved,
                "truth_per_message": statistics.mean(gains) if gains else None,
                "truth_relative": p_best / p_due - 1 if p_due else None,
                "ideal_relative": p_ideal / p_due - 1 if p_due else None,
                "truth_per_unit": truth.effects["revenue"] if truth and truth.units else None,
                "truth_units": truth.units if truth else 0,
                "seconds": seconds,
            }
            metric = report.analysis.metrics.get("revenue")
            comparison = metric.headline.get(best) if metric else None
            if metric is not None and comparison is not None and comparison.absolute.value is not None:
                e = comparison.absolute
                n_c, n_t = metric.arms[fixed].n, metric.arms[best].n
                variance = (metric.arms[fixed].variance + metric.arms[best].variance) / 2
                mde = minimum_detectable_effect(variance, n_c, n_t).value
                effect = row["truth_per_unit"]
                needed = (
                    math.ceil((n_c + n_t) / 2 * (mde / effect) ** 2)
                    if mde is not None and effect is not None and effect > 0
                    else None
                )
                row["report"] = {
                    "units": {fixed: n_c, best: n_t},
                    "estimate": e.value,
                    "ci": [e.ci_low, e.ci_high],
                    "cuped": metric.cuped_adjusted,
                    "covers_truth": e.ci_low is not None
                    and e.ci_high is not None
                    and effect is not None
                    and e.ci_low <= effect <= e.ci_high,
                    "mde_80": mde,
                    "units_per_arm_needed": needed,
                }
            rows.append(row)
            print(
                f"  seed {seed} {experiment.id}: {row['messages']} messages, {moved} moved; truth/message "
                f"{row['truth_per_message'] or 0:+.4f} ({100 * (row['truth_relative'] or 0):+.1f} %; "
                f"a perfect model {100 * (row['ideal_relative'] or 0):+.1f} %), "
                f"truth/unit {row['truth_per_unit'] or 0:+.4f}; units {arm_units}, e-mail revenue/unit by "
                f"arm {expected}; report "
                f"{json.dumps(row.get('report'))}",
                flush=True,
            )
        return rows
    finally:
        store.close()


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for experiment in dict.fromkeys(r["experiment"] for r in rows):
        mine = [r for r in rows if r["experiment"] == experiment]
        per_message = [r["truth_per_message"] for r in mine if r["truth_per_message"] is not None]
        relative = [r["truth_relative"] for r in mine if r["truth_relative"] is not None]
        ideal = [r["ideal_relative"] for r in mine if r["ideal_relative"] is not None]
        per_unit = [r["truth_per_unit"] for r in mine if r["truth_per_unit"] is not None]
        by_arm = [
            r["email_revenue_per_unit_difference"]
            for r in mine
            if r.get("email_revenue_per_unit_difference") is not None
        ]
        reports = [r["report"] for r in mine if "report" in r]
        needed = [x["units_per_arm_needed"] for x in reports if x["units_per_arm_needed"]]
        out.append(
            {
                "experiment": experiment,
                "seeds": len(mine),
                "messages_best_hour": sum(r["messages"].get("best_hour", 0) for r in mine),
                "truth_per_message": _interval(per_message) if per_message else None,
                "truth_relative": _interval(relative) if relative else None,
                "ideal_relative": _interval(ideal) if ideal else None,
                "truth_per_unit": _interval(per_unit) if per_unit else None,
                "email_revenue_per_unit_difference": _interval(by_arm) if by_arm else None,
                "messages_fixed_hour": sum(r["messages"].get("fixed_hour", 0) for r in mine),
                "report_intervals_above_zero": sum(1 for x in reports if (x["ci"][0] or 0) > 0),
                "report_intervals_covering_truth": sum(1 for x in reports if x["covers_truth"]),
                "reports": len(reports),
                "units_per_arm_needed_median": statistics.median(needed) if needed else None,
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--seeds", default="31,32,33")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--day-pooling",
        nargs="?",
        const="on",
        default="model",
        choices=("model", "on", "off"),
        help="the send-time model's day pooling: as trained (model), or on / off (see above)",
    )
    parser.add_argument(
        "--campaign-days", default="1,8,16", help="days (from the start) the campaign job runs; '' for none"
    )
    parser.add_argument("--campaign-hour", type=int, default=14, help="the campaign job's hour (UTC)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.process_time()
    rows: list[dict[str, Any]] = []
    models = _models(args.day_pooling)  # once: the same models for every population
    card = _model_card(models)
    print(f"send-time model: {card}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            rows.extend(run_seed(seed, args, Path(tmp), models))
    summary = summarize(rows)
    for s in summary:
        print(json.dumps(s))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
    ).stdout
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "commit": commit.strip(),
                "customers": args.customers,
                "days": args.days,
                "seeds": seeds,
                "day_pooling": args.day_pooling,
                "send_time_model": card,
                "campaigns": [str(t) for t in _campaigns(args)],
                "cpu_seconds": time.process_time() - started,
                "rows": rows,
                "summary": summary,
            },
            indent=1,
        )
    )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
