"""Records the golden corpus: ``python -m tests.golden.record`` (see README.md in this directory).

Plays the simulated store (``nextbest.simulate``) through the decision engine in this process, one
segment per seed, each against a fresh ``MemoryStore`` with a clock that reads the simulated time, and
writes every ``RecordEvents`` and ``NextAction`` call with its answer (``explain`` on) to
``corpus.jsonl.gz``. The catalog and the models are read from this directory (``catalog.yaml``,
``models/``), never from the bundled ones, so the corpus is what those files make.

The simulator decides on four triggers only; a seeded *mixer* adds, next to some of its calls and at
the same simulated moment, what a store's other backends send: the triggers no simulated behaviour
makes (subscribed, order_shipped, order_delivered, back_in_stock with inventory events, added_to_cart,
refunded), request context the simulator leaves out (page category, attributes, out-of-stock products,
no time zone), retried request ids, answers without ``explain``, events that suppress or change consent,
duplicated events and invalid requests and events (answered with their field violations).

To record with the pipeline of another commit, put its sources first on the path:

    git worktree add /tmp/golden-base <commit>
    PYTHONPATH=/tmp/golden-base/src .venv/bin/python -m tests.golden.record
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

import nextbest
from nextbest.catalog import Catalog, bundled_catalog_path, load_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import (
    ActionClass,
    BounceKind,
    Channel,
    ChosenAction,
    Decision,
    DecisionRequest,
    Event,
    EventType,
    RequestContext,
)
from nextbest.errors import NextbestError
from nextbest.models import ModelRegistry
from nextbest.simulate import START, Message, Simulator, population
from nextbest.simulate.backends import Decided, SimEvent, SimRequest
from nextbest.store import DecisionStore
from nextbest.store.memory import MemoryStore
from tests.golden.corpus import (
    FORMAT,
    Corpus,
    IdMap,
    Json,
    Segment,
    decision_json,
    error_json,
    event_json,
    event_result_json,
    read_corpus,
    request_json,
    when,
    write_corpus,
)

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "catalog.yaml"
# The bundled catalog with a tight contact policy (``tight_catalog``), written next to it when recording.
TIGHT_CATALOG = HERE / "catalog-tight.yaml"
MODELS = HERE / "models"
CORPUS = HERE / "corpus.jsonl.gz"
REPOSITORY_MODELS = HERE.parents[1] / "models"


@dataclass(frozen=True)
class Plan:
    """One segment: a simulation stopped after ``decisions`` NextAction calls (mixer's included)."""

    name: str
    seed: int
    customers: int
    days: int
    decisions: int
    start: datetime = START
    max_actions: int = 2
    catalog: str = CATALOG.name
    why: str = ""


# 10,000 decisions in five segments. The simulation is stopped at each segment's quota, so a segment
# covers its whole population from ``start`` until the quota is reached.
PLANS = (
    Plan(
        "long-history",
        seed=11,
        customers=220,
        days=70,
        decisions=3000,
        why="few customers over ten weeks: deep contact histories (caps, cooldowns, re-entry, the "
        "engagement window), Black Friday promotions, replenishment and winback windows",
    ),
    Plan(
        "many-units",
        seed=12,
        customers=3000,
        days=8,
        decisions=2500,
        why="many customers over a week: experiment assignment across thousands of units, first "
        "decisions, journeys starting",
    ),
    Plan(
        "one-action",
        seed=13,
        customers=800,
        days=30,
        decisions=1750,
        max_actions=1,
        why="one action per request: arbitration's MAX_ACTIONS and preemption by single winners",
    ),
    Plan(
        "spring-dst",
        seed=14,
        customers=800,
        days=30,
        decisions=1750,
        start=datetime.fromisoformat("2027-03-01T00:00:00+00:00"),
        why="March 2027, across both daylight-saving changes (US 14 March, EU 28 March): quiet hours "
        "and send times around shifted local clocks",
    ),
    Plan(
        "tight-policy",
        seed=15,
        customers=400,
        days=30,
        decisions=1000,
        catalog=TIGHT_CATALOG.name,
        why="the bundled catalog with a tight contact policy (catalog-tight.yaml): send windows that "
        "quiet hours overrun (QUIET_HOURS), low caps (FREQUENCY_CAP), 30 % holdouts (the "
        "counterfactual), send-time optimisation on every e-mail",
    ),
)


def tight_catalog(text: str) -> str:
    """``text`` (the bundled catalog) with a contact policy that refuses often."""
    data = yaml.safe_load(text)
    data["name"] = "example-store-tight-policy"
    policy = data["policy"]
    policy["caps"] = [
        {"id": "marketing_daily", "limit": 1, "window": "1d"},
        {"id": "marketing_weekly", "limit": 3, "window": "7d"},
        {"id": "email_weekly", "channels": ["email"], "limit": 2, "window": "7d"},
    ]
    policy["quiet_hours"]["email"] = {"start": "21:30", "end": "07:30"}
    for action in data["actions"]:
        if action["channel"] in ("sms", "push", "email"):
            action["send_window"] = "3h"
        if action["channel"] == "email" and action["class"] != "transactional":
            action["send_time"] = "optimize"
    for experiment in data["experiments"]:
        if experiment["id"] in ("global_holdout", "cart_flow_holdout"):
            experiment["arms"][0]["weight"], experiment["arms"][1]["weight"] = 0.3, 0.7
    header = "# Written by tests/golden/record.py (tight_catalog) from catalog.yaml: do not edit.\n"
    return header + yaml.safe_dump(data, sort_keys=False)


# The share of the simulator's NextAction calls the mixer adds an operation next to.
MIX = 0.2
_OTHER_TRIGGERS = ("subscribed", "order_shipped", "order_delivered", "added_to_cart", "refunded")
_PAGES = ("shoes", "kitchen", "garden", "")


class QuotaReachedError(Exception):
    """The segment's quota of decisions is reached."""


class Clock:
    """The engine's clock: the simulated moment of the operation being made."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class RecordingBackend:
    """The simulator's backend (``nextbest.simulate.backends.Backend``): the engine in this process,
    every call written down with the clock it was made at."""

    def __init__(self, engine: DecisionEngine, clock: Clock, plan: Plan) -> None:
        self.engine = engine
        self.clock = clock
        self.plan = plan
        self.operations: list[Json] = []
        self.decisions = 0
        self.rng = np.random.default_rng([plan.seed, 25])
        self.serial = 0
        # The engine's decision ids are random: the corpus names decisions d1, d2, ... in the order they
        # were made, so that recording twice writes the same file.
        self.ids = IdMap()

    # -- the two calls, recorded --------------------------------------------------------------------

    def _decide(self, request: DecisionRequest, at: datetime) -> Decision | None:
        if self.decisions >= self.plan.decisions:
            raise QuotaReachedError
        self.decisions += 1
        self.clock.at = at
        op: Json = {"kind": "decide", "clock": when(at), "request": request_json(request)}
        try:
            decision: Decision | None = self.engine.decide(request)
        except NextbestError as exc:
            op["error"] = error_json(exc, self.ids.to_recorded)
            decision = None
        else:
            assert decision is not None
            if decision.decision_id not in self.ids.to_recorded:
                self.ids.learn(f"d{len(self.ids.to_recorded) + 1}", decision.decision_id)
            op["decision"] = decision_json(decision, self.ids.to_recorded)
        self.operations.append(op)
        return decision

    def _record(self, events: Sequence[Event], at: datetime) -> list[tuple[str, str]]:
        self.clock.at = at
        results = self.engine.record_events(events)
        self.operations.append(
            {
                "kind": "events",
                "clock": when(at),
                "events": [event_json(e, self.ids.to_recorded) for e in events],
                "results": [event_result_json(r, self.ids.to_recorded) for r in results],
            }
        )
        return [(c.decision_id, c.action_id) for r in results for c in r.cancelled]

    # -- Backend ------------------------------------------------------------------------------------

    def decide(self, request: SimRequest) -> Decided:
        decision = self._decide(_request(request), request.at)
        assert decision is not None, "the simulator's requests are valid"
        if self.rng.random() < MIX:
            self._mix(request)
        return _decided(decision)

    def record(self, events: Sequence[SimEvent]) -> list[tuple[str, str]]:
        return self._record([_event(e) for e in events], max(e.at for e in events))

    # -- the mixer ----------------------------------------------------------------------------------

    def _id(self, user_id: str, kind: str) -> str:
        self.serial += 1
        return f"{user_id}-golden-{kind}{self.serial}"

    def _mix(self, sim: SimRequest) -> None:
        """One operation for the customer of ``sim``, at its moment."""
        at, user = sim.at, sim.user_id
        base = _request(sim)
        choice = int(self.rng.integers(0, 10))
        if choice == 0:  # a retry: the same request_id and question replays the stored decision
            self._decide(replace(base, explain=bool(self.rng.random() < 0.5)), at)
        elif choice == 1:  # another backend's trigger
            trigger = str(self.rng.choice(_OTHER_TRIGGERS))
            self._decide(replace(base, request_id=self._id(user, "r"), trigger=trigger), at)
        elif choice == 2:  # a product back in stock, announced to a customer who viewed it
            products = sim.product_ids or (f"p{int(self.rng.integers(0, 200))}",)
            kind = EventType.BACK_IN_STOCK if self.rng.random() < 0.6 else EventType.OUT_OF_STOCK
            stock = Event(self._id(f"inventory-{self.plan.seed}", "e"), "", kind, at, product_ids=products)
            self._record([stock], at)
            context = replace(base.context, product_ids=products)
            self._decide(
                replace(base, request_id=self._id(user, "r"), trigger="back_in_stock", context=context), at
            )
        elif choice == 3:  # request context the simulator leaves out
            context = RequestContext(
                cart_value=base.context.cart_value,
                product_ids=base.context.product_ids,
                page_category=str(self.rng.choice(_PAGES)),
                time_zone="" if self.rng.random() < 0.5 else base.context.time_zone,
                attributes={"segment": str(self.rng.choice(["new", "loyal"])), "ab": "x"},
                out_of_stock_product_ids=base.context.product_ids[:1] if self.rng.random() < 0.5 else (),
            )
            self._decide(replace(base, request_id=self._id(user, "r"), context=context), at)
        elif choice == 4:  # without explain: only HELD_OUT rejections are answered
            self._decide(replace(base, request_id=self._id(user, "r"), explain=False), at)
        elif choice == 5:  # consent withdrawn or granted on a channel, then a decision
            channel = Channel(str(self.rng.choice([Channel.EMAIL, Channel.PUSH, Channel.SMS])))
            granted = bool(self.rng.random() < 0.5)
            event = Event(
                self._id(user, "e"), user, EventType.CONSENT_CHANGED, at, channel=channel,
                consent_granted=granted,
            )  # fmt: skip
            self._record([event], at)
            self._decide(replace(base, request_id=self._id(user, "r")), at)
        elif choice == 6:  # a bounce, a complaint or a refund
            kind = EventType(str(self.rng.choice(["bounced", "complained", "refunded"])))
            event = Event(
                self._id(user, "e"),
                user,
                kind,
                at,
                channel=Channel.EMAIL if kind is not EventType.REFUNDED else None,
                bounce_kind=BounceKind(str(self.rng.choice(["hard", "soft"])))
                if kind is EventType.BOUNCED
                else None,
                value=12.5 if kind is EventType.REFUNDED else 0.0,
            )
            self._record([event], at)
        elif choice == 7:  # a retried batch: every event a duplicate, plus one the validator refuses
            event_id = self._id(user, "e")
            viewed = Event(event_id, user, EventType.PRODUCT_VIEWED, at, product_ids=("p1",))
            self._record([viewed, viewed, Event(self._id(user, "e"), user, None, at)], at)
            self._record([viewed], at)
        elif choice == 8:  # an invalid request: answered with its field violations, nothing written
            bad = replace(
                base,
                request_id=self._id(user, "r"),
                trigger=str(self.rng.choice(["order_refunded", ""])),
                max_actions=int(self.rng.choice([2, 11])),
            )
            self._decide(bad, at)
        else:  # the same request_id asked a different question: ALREADY_EXISTS
            self._decide(replace(base, trigger="added_to_cart"), at)


def _request(r: SimRequest) -> DecisionRequest:
    return DecisionRequest(
        request_id=r.request_id,
        user_id=r.user_id,
        trigger=r.trigger,
        occurred_at=r.at,
        context=RequestContext(cart_value=r.cart_value, product_ids=r.product_ids, time_zone=r.time_zone),
        channels=r.channels,
        max_actions=r.max_actions,
        explain=True,
    )


def _event(e: SimEvent) -> Event:
    return Event(
        e.event_id,
        e.user_id,
        e.type,
        e.at,
        value=e.value,
        channel=e.channel,
        consent_granted=e.consent_granted,
        product_ids=e.product_ids,
        decision_id=e.decision_id,
        order_id=e.order_id,
    )


def _decided(decision: Decision) -> Decided:
    """What the simulator needs of a decision (as ``EngineBackend`` gives it)."""

    def message(a: ChosenAction) -> Message:
        marketing = a.action_class is not ActionClass.TRANSACTIONAL
        return Message(a.action_id, a.flow, a.channel, a.send_at, dict(a.parameters), marketing)

    return Decided(
        decision.decision_id,
        [message(a) for a in decision.actions],
        [(e.experiment_id, e.arm_id, message(e.action)) for e in decision.exposures if e.held_out],
        [(e.experiment_id, e.arm_id, e.action.action_id) for e in decision.exposures if not e.held_out],
        [(c.decision_id, c.action_id) for c in decision.cancelled],
    )


def record_segment(plan: Plan, catalog: Catalog, models: ModelRegistry) -> Segment:
    clock = Clock(plan.start)
    engine = DecisionEngine(catalog, MemoryStore(), clock=clock, models=models)
    backend = RecordingBackend(engine, clock, plan)
    simulator = Simulator(
        backend,
        population(plan.customers, plan.seed, plan.start),
        days=plan.days,
        seed=plan.seed,
        start=plan.start,
        max_actions=plan.max_actions,
    )
    try:
        simulator.run()
    except QuotaReachedError:
        pass
    else:
        raise SystemExit(
            f"segment {plan.name}: the simulation ended after {backend.decisions} decisions, short of "
            f"its quota of {plan.decisions}: give it more customers or days"
        )
    header: Json = {
        "kind": "segment",
        "name": plan.name,
        "seed": plan.seed,
        "customers": plan.customers,
        "days": plan.days,
        "start": when(plan.start),
        "max_actions": plan.max_actions,
        "catalog": plan.catalog,
        "catalog_version": catalog.version,
        "decisions": backend.decisions,
        "why": plan.why,
    }
    return Segment(header, backend.operations)


def _commit() -> str:
    """The commit of the nextbest sources in use, marked ``+dirty`` when they differ from it."""
    source = Path(nextbest.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def copy_inputs() -> None:
    """The bundled catalog and the promoted models, copied here (what the corpus is recorded with)."""
    shutil.copyfile(bundled_catalog_path(), CATALOG)
    if MODELS.exists():
        shutil.rmtree(MODELS)
    for promoted in sorted(REPOSITORY_MODELS.glob("*/PROMOTED")):
        kind = promoted.parent.name
        version = promoted.read_text().strip()
        (MODELS / kind).mkdir(parents=True)
        shutil.copyfile(promoted, MODELS / kind / "PROMOTED")
        shutil.copytree(promoted.parent / version, MODELS / kind / version)


def coverage(corpus: Corpus) -> str:
    """What the corpus exercises, counted (``--stats``; README.md quotes it)."""
    counts: dict[str, Counter[str]] = {
        name: Counter()
        for name in ("trigger", "action", "reason", "error", "event", "outcome", "cancel", "arm", "send_time")
    }
    for _, _, op in corpus.operations():
        if op["kind"] == "events":
            for e, r in zip(op["events"], op["results"], strict=True):
                counts["event"][e["type"] or "(none)"] += 1
                result = r if isinstance(r, dict) else {"outcome": r}
                counts["outcome"][result["outcome"]] += 1
                for c in result.get("cancelled", ()):
                    counts["cancel"][f"by an event: {c['reason'].split(' at ')[0]}"] += 1
            continue
        counts["trigger"][op["request"]["trigger"] or "(empty)"] += 1
        if "error" in op:
            counts["error"][op["error"]["type"]] += 1
            continue
        d = op["decision"]
        for a in d["actions"]:
            counts["action"][a["action_id"]] += 1
            counts["send_time"][a["send_time"]] += 1
        for r in d["rejected"]:
            counts["reason"][r[4]] += 1
        counts["cancel"]["preempted by a decision"] += len(d["cancelled"])
        for e in d["exposures"]:
            counts["arm"][f"{e['experiment_id']}/{e['arm_id']}{' held out' if e['held_out'] else ''}"] += 1
    return "\n".join(
        f"{name}: " + ", ".join(f"{key} {n:,}" for key, n in counter.most_common())
        for name, counter in counts.items()
    )


@contextlib.contextmanager
def _fresh_store(database: str | None) -> Iterator[DecisionStore]:
    """A fresh store: in memory; a new SQLite file (``sqlite``); or a new database on the PostgreSQL
    server of ``database`` (a URL), dropped afterwards."""
    if database is None:
        yield MemoryStore()
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from nextbest.store import Database, Store, upgrade

    admin, name = None, ""
    if database == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(prefix='golden-')}/golden.db"
    else:
        name = f"nextbest_golden_{uuid.uuid4().hex[:10]}"
        admin = create_engine(make_url(database), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(database).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    try:
        upgrade(db)
        store = Store(db)
        yield store
        store.close()
    finally:
        db.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def replay(path: Path, database: str | None = None, batch: int = 1) -> int:
    """Replays the whole corpus on a fresh store per segment, with wall and CPU times."""
    from tests.golden.replay import replay_segment, summary

    started = time.perf_counter()
    corpus = read_corpus(path)
    print(f"read {path} in {time.perf_counter() - started:.1f}s")
    models = ModelRegistry(MODELS)
    catalogs: dict[str, Catalog] = {}
    wall = cpu = 0.0
    failed = 0
    for segment in corpus.segments:
        name = segment.header["catalog"]
        catalog = catalogs.get(name) or catalogs.setdefault(name, load_catalog(HERE / name))
        with _fresh_store(database) as store:
            began, began_cpu = time.perf_counter(), time.process_time()
            result = replay_segment(segment, catalog, models, store, batch=batch)
            took, took_cpu = time.perf_counter() - began, time.process_time() - began_cpu
        wall, cpu = wall + took, cpu + took_cpu
        print(
            f"{segment.name}: {result.operations:,} operations ({result.decisions:,} decisions, "
            f"{result.events:,} events) in {took:.1f}s ({took_cpu:.1f}s CPU), "
            f"{result.mismatched:,} differ",
            flush=True,
        )
        if result.mismatched:
            failed += 1
            print(summary(result))
    print(f"all: {wall:.1f}s ({cpu:.1f}s CPU)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.golden.record", description=__doc__)
    parser.add_argument(
        "--copy-inputs",
        action="store_true",
        help="first copy the bundled catalog and the promoted models here (replacing the copies)",
    )
    parser.add_argument("--out", type=Path, default=CORPUS)
    parser.add_argument("--stats", action="store_true", help="only count what the corpus at --out holds")
    parser.add_argument(
        "--replay",
        action="store_true",
        help="only replay the whole corpus at --out, timed per segment (what test_golden.py checks)",
    )
    parser.add_argument(
        "--database",
        help="with --replay: 'sqlite' (a new file per segment) or a PostgreSQL URL (a new database on "
        "its server per segment); default the memory store",
    )
    parser.add_argument("--batch", type=int, default=1, help="with --replay: decide_batch up to this many")
    args = parser.parse_args(argv)
    if args.database not in (None, "sqlite") and not str(args.database).startswith("postgresql"):
        parser.error(f"--database must be 'sqlite' or a postgresql URL, got {args.database!r}")
    if args.batch < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    if not args.out.exists() and (args.stats or args.replay):
        parser.error(f"no corpus at {args.out}")
    if args.stats:
        print(coverage(read_corpus(args.out)))
        return 0
    if args.replay:
        return replay(args.out, args.database, args.batch)
    if args.copy_inputs:
        copy_inputs()
    TIGHT_CATALOG.write_text(tight_catalog(CATALOG.read_text()))
    catalogs = {path.name: load_catalog(path) for path in (CATALOG, TIGHT_CATALOG)}
    models = ModelRegistry(MODELS)
    broken = [s for s in models.statuses if s.state.value != "loaded"]
    if broken:
        print(f"a model in {MODELS} did not load: {broken[0]}", file=sys.stderr)
        return 2
    segments = []
    started = time.perf_counter()
    for plan in PLANS:
        began = time.perf_counter()
        segment = record_segment(plan, catalogs[plan.catalog], models)
        segments.append(segment)
        events = sum(len(op["events"]) for op in segment.operations if op["kind"] == "events")
        print(
            f"{plan.name} (seed {plan.seed}): {len(segment.operations):,} operations, "
            f"{segment.header['decisions']:,} decisions, {events:,} events, "
            f"{time.perf_counter() - began:.1f}s"
        )
    header: Json = {
        "kind": "corpus",
        "format": FORMAT,
        "commit": _commit(),
        "catalogs": {name: c.version for name, c in sorted(catalogs.items())},
        "models": dict(sorted(models.current.versions.items())),
        "segments": [p.name for p in PLANS],
    }
    size = write_corpus(args.out, Corpus(header, segments))
    print(f"wrote {args.out} ({size:,} bytes) in {time.perf_counter() - started:.1f}s at {header['commit']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
