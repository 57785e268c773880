"""``make models``: the bundled models, trained reproducibly on the project's own simulated store.

Simulates customers under the bundled catalog through the decision engine into a fresh SQLite store —
with the cart-flow holdout widened to half of the abandoners (``--exploration``), the randomized
exploration a store runs so that the uplift learner sees enough untreated carts — then trains and
promotes the propensity, uplift and send-time models from that store's exposure log, exactly as
``nextbest train ... --promote`` would.

The exploration store has 320,000 customers, and each later step of the cart flow (the push, the SMS
nudge, the incentive) is withheld from half of the carts that reach it (``--step-exploration``), so the
uplift model pools four holdouts and prices every cart action by its own randomized effect: on
``benchmarks/bench_decision_quality.py`` its models earned 86.4 % of the oracle's net, against 81.4 % for
the flow's holdout alone on the same store and 83.3 % for the store without the later steps' holdouts
that was bundled before (at 40,000 customers, with the SMS nudge and the incentive only, the same
pooling had earned nothing: too few rows); 320,000 customers then earned 87.7 % against 86.4 % with
160,000, more on every population. 80,000 customers had earned 82.3 % against 80.0 % with 40,000; with
the same training 160,000 then earned what 80,000 did (``benchmarks/RESULTS.md``).
The uplift learner is the X-learner (``--learner``): on the 40,000-customer store it had the best Qini of
the four learners on the validation slice and on the test period, and, served, it earned more than the
two-model learner on every population; the shared-base learner earned less (its untreated model's level
also prices the cart actions it did not see randomized), and so did the transformed-outcome learner; the
ensemble tied it on the 160,000-customer store and lost 2.6 points on the step-explored one; with
effects per action (``x-learner-by-action``) it tied the X-learner at 320,000 customers
(``benchmarks/RESULTS.md``). ``--reuse-database`` trains on a store an earlier run simulated (the
simulation is deterministic for its arguments). The simulation runs in one process per CPU
(``--processes``), each playing a share of the customers into the one store, which skips the per-commit
flush (a scratch store is simulated again, not recovered): 4,000 customers took 60 s against 152 s in
one process with the flush, the same store and models (``benchmarks/RESULTS.md``).

    python -m nextbest.simulate.bundle [--customers 320000] [--days 35] [--seed 7] [--models-dir models]

The churn model (customer scores) is not among the default ``--kinds``: it is trained on a store of its
own, ``--kinds churn --customers 8000 --days 42 --database var/churn-sim.db`` (``make models`` runs
both), with a 14-day horizon. Its rows are customers at weekly cut-offs whose horizon ends before the
test cut-off, so the store's length matters more than its size: on the 320,000-customer store's 35 days
it had churn AUC 0.675 and ECE 0.052 on the test cut-off, on 8,000 customers x 42 days 0.684 and 0.033.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from nextbest.catalog import Catalog, bundled_catalog_path, parse_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.models.artifacts import ModelKind
from nextbest.simulate import START, EngineBackend, Simulator, population
from nextbest.store import Database, Store, upgrade
from nextbest.training import Source, train
from nextbest.training.fit import LEARNERS

#: The cart flow's later steps, each withheld from a share of the carts that reach it in the exploration
#: store (``--step-exploration``): the flow's holdout randomizes only a unit's first message (the 1 h
#: reminder), so without these the uplift model never sees the push, the SMS nudge or the incentive as a
#: treatment of its own and prices them by the propensity model, not by their effect. At half of the
#: carts and 160,000 customers, pooling the four holdouts earned 86.4 % of the oracle's net against 81.4 %
#: for the flow's holdout alone on the same store (every population); at 40,000 customers, with the SMS
#: nudge and the incentive only, it had earned nothing (78.4 % against 78.5 %): benchmarks/RESULTS.md.
STEP_EXPLORATION = {
    "explore_cart_reminder_push": "cart_reminder_push",
    "explore_cart_nudge_sms": "cart_nudge_sms",
    "explore_cart_incentive": "cart_incentive_email",
}
#: The experiments the bundled uplift model pools (``datasets.uplift_set``): the flow's holdout first.
EXPLORATION_EXPERIMENTS = ("cart_flow_holdout", *STEP_EXPLORATION)


def _training_catalog(exploration: float, step_exploration: float) -> Catalog:
    """The bundled catalog with the cart-flow holdout at ``exploration`` and each later cart step
    withheld from ``step_exploration`` of the carts that reach it."""
    data = yaml.safe_load(bundled_catalog_path().read_text())
    for experiment in data.get("experiments", []):
        if experiment["id"] == "cart_flow_holdout":
            experiment["arms"][0]["weight"], experiment["arms"][1]["weight"] = exploration, 1 - exploration
    if step_exploration > 0:
        for experiment_id, action in STEP_EXPLORATION.items():
            data["experiments"].append(
                {
                    "id": experiment_id,
                    "description": f"Exploration: {action} withheld from a share of the carts that reach it.",
                    "scope": {"actions": [action]},
                    "arms": [
                        {"id": "withheld", "weight": step_exploration, "no_action": True},
                        {"id": "sent", "weight": 1 - step_exploration},
                    ],
                }
            )
    return parse_catalog(yaml.safe_dump(data), "bundled catalog (exploration holdouts)")


def _simulate_part(url: str, args: argparse.Namespace, part: int, parts: int) -> tuple[int, int, int]:
    """Plays every ``parts``-th customer of the population, from the ``part``-th, into the store at
    ``url``: customers are independent (each has their own history, random streams and experiment
    units), so the store is the same, row for row but for ids and order, whatever the split."""
    db = Database(url, durable=False)
    store = Store(db)
    try:
        catalog = _training_catalog(args.exploration, args.step_exploration)
        engine = DecisionEngine(catalog, store, clock=lambda: START)
        customers = population(args.customers, args.seed)[part::parts]
        started = time.perf_counter()

        def progress(decisions: int, reached: datetime) -> None:
            day = (reached - START).total_seconds() / 86400
            print(
                f"  ... part {part + 1} of {parts}: day {day:.1f} of {args.days}, {decisions:,} decisions "
                f"in {time.perf_counter() - started:.0f}s",
                flush=True,
            )

        result = Simulator(
            EngineBackend(engine),
            customers,
            days=args.days,
            seed=args.seed,
            shards=args.shards,
            progress=progress,
            progress_every=args.progress_every,
        ).run()
    finally:
        store.close()
    return len(result.carts), result.messages, result.orders


def _simulate(args: argparse.Namespace, path: Path, url: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = Database(url, durable=False)
    upgrade(db)
    db.dispose()
    started = time.perf_counter()
    parts = max(1, min(args.processes, args.customers))
    if parts == 1:
        totals = [_simulate_part(url, args, 0, 1)]
    else:
        # Spawned, not forked: each process opens its own connections and threads.
        with ProcessPoolExecutor(parts, mp_context=multiprocessing.get_context("spawn")) as pool:
            totals = list(
                pool.map(_simulate_part, [url] * parts, [args] * parts, range(parts), [parts] * parts)
            )
    carts, messages, orders = (sum(t) for t in zip(*totals, strict=True))
    print(
        f"simulated {args.customers} customers x {args.days} days in {time.perf_counter() - started:.0f}s "
        f"({parts} processes): {carts} carts, {messages} messages, {orders} orders"
    )


def argument_parser() -> argparse.ArgumentParser:
    """The command's arguments (``make models`` passes some; the test of the bundle reads them)."""
    parser = argparse.ArgumentParser(prog="python -m nextbest.simulate.bundle", description=__doc__)
    parser.add_argument("--customers", type=int, default=320000)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--exploration", type=float, default=0.5, help="share of cart abandoners held out of the cart flow"
    )
    parser.add_argument(
        "--step-exploration",
        type=float,
        default=0.5,
        help="share of the carts reaching the push, the SMS nudge or the incentive that do not get it, "
        "each step a holdout the uplift model pools (0: the flow's holdout alone)",
    )
    parser.add_argument("--learner", choices=LEARNERS, default="x-learner", help="the uplift learner to keep")
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="processes simulating a share of the customers each, into the one store (same result)",
    )
    parser.add_argument("--shards", type=int, default=2, help="concurrent callers per process (same result)")
    parser.add_argument(
        "--progress-every", type=float, default=300.0, help="seconds between a process's progress lines"
    )
    parser.add_argument("--models-dir", default="models")
    parser.add_argument(
        "--kinds",
        default=",".join(k.value for k in ModelKind if k is not ModelKind.CHURN),
        help="the model kinds to train, comma-separated (default: all but churn, which is trained on a "
        "longer store of its own: --kinds churn --customers 8000 --days 42)",
    )
    parser.add_argument("--churn-horizon-days", type=float, default=14.0, help="churn: the horizon")
    parser.add_argument("--database", default="var/models-sim.db", help="the SQLite file to simulate into")
    parser.add_argument(
        "--reuse-database",
        action="store_true",
        help="train on the store a previous run simulated into --database with the same arguments "
        "(the simulation is deterministic for a seed) instead of simulating it again",
    )
    return parser


def kinds_of(args: argparse.Namespace) -> list[ModelKind]:
    """The model kinds ``args`` trains (``ValueError`` for an unknown one)."""
    return [ModelKind(k.strip()) for k in args.kinds.split(",") if k.strip()]


def command(args: argparse.Namespace) -> str:
    """The command a model card records: every argument that changes the models, defaults spelled out."""
    return (
        "python -m nextbest.simulate.bundle "
        f"--customers {args.customers} --days {args.days} --seed {args.seed} "
        f"--exploration {args.exploration} --step-exploration {args.step_exploration} "
        f"--learner {args.learner} --kinds {','.join(kinds_of(args))} "
        f"--churn-horizon-days {args.churn_horizon_days:g}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.step_exploration < 1.0:
        parser.error("--step-exploration: a share of the carts, at least 0 and below 1")
    try:
        kinds = kinds_of(args)
    except ValueError:
        parser.error(f"--kinds: choose from {', '.join(k.value for k in ModelKind)}")
    path = Path(args.database)
    url = f"sqlite:///{path}"
    if args.reuse_database:
        if not path.is_file():
            parser.error(f"--reuse-database: {path} does not exist; run without it to simulate the store")
        print(f"training on the store already simulated in {path}")
    else:
        _simulate(args, path, url)
    source = Source(
        database_url=url,
        as_of=START + timedelta(days=args.days),
        horizon=timedelta(days=args.churn_horizon_days),
        experiments=EXPLORATION_EXPERIMENTS if args.step_exploration > 0 else (),
    )
    for kind in kinds:
        directory, card = train(
            kind,
            source,
            Path(args.models_dir),
            args.seed,
            promote_it=True,
            command=command(args),
            learner=args.learner if kind is ModelKind.UPLIFT else None,
        )
        print(f"{kind.value}: {card.version} promoted ({directory})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
