"""``nextbest simulate``: the whole loop against a real server, checked against the truth.

Starts ``nextbest serve`` in a child process (or drives ``--target``), plays the simulated store through
it over gRPC, writes the ground truth, asks the server for each experiment's lift report
(``GetLiftReport``) and prints the estimates next to the true effects, then writes the HTML reports.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.catalog import Catalog, bundled_catalog_path, load_catalog
from nextbest.client import NextbestClient
from nextbest.settings import Settings
from nextbest.simulate import GrpcBackend, SimulationResult, Simulator, population
from nextbest.simulate.truth import ArmTruth, truths, write_truth
from nextbest.simulate.world import START

__all__ = ["Comparison", "SimulationOptions", "SimulationOutcome", "run_simulation"]


@dataclass
class SimulationOptions:
    customers: int = 2000
    days: int = 21
    seed: int = 1
    shards: int = 8
    target: str | None = None  # drive this server instead of starting one
    database_url: str | None = None  # for the started server (default: a fresh SQLite file under var/)
    catalog: Path | None = None
    models_dir: Path | None = None  # default: the server's (the bundled models)
    truth: Path = Path("var/simulation-truth.json")
    html_dir: Path | None = Path("var/reports")
    window_days: float = 14.0
    progress_every: float = 60.0  # seconds between progress lines
    start: datetime = START
    target_settings: Settings | None = None  # the token and TLS to reach ``target`` with


@dataclass(frozen=True)
class Comparison:
    truth: ArmTruth
    metric: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def covered(self) -> bool | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        value = self.truth.effects[self.metric]
        return bool(self.ci_low <= value <= self.ci_high)


@dataclass
class SimulationOutcome:
    result: SimulationResult
    wall_s: float
    database_url: str | None
    truth_path: Path
    comparisons: list[Comparison] = field(default_factory=list)
    html: list[Path] = field(default_factory=list)

    @property
    def decisions_per_s(self) -> float:
        return self.result.decisions / self.wall_s if self.wall_s else math.nan


@contextlib.contextmanager
def _server(options: SimulationOptions, database_url: str | None) -> Iterator[str]:
    if options.target:
        yield options.target
        return
    from nextbest.server.process import server_process

    args = ["--database-url", str(database_url), "--log-level", "WARNING"]
    if options.catalog:
        args += ["--catalog", str(options.catalog)]
    if options.models_dir:
        args += ["--models-dir", str(options.models_dir)]
    log = Path("var") / f"simulate-server-{options.seed}.log"
    with server_process(args, log) as address:
        yield address


def _client(options: SimulationOptions, address: str) -> NextbestClient:
    if options.target and options.target_settings is not None:
        return NextbestClient.from_settings(address, options.target_settings, timeout=30.0)
    return NextbestClient(address, timeout=30.0)


def _estimate(report: pb.GetLiftReportResponse, arm: str, metric: str) -> pb.LiftEstimate | None:
    for m in report.metrics:
        if m.metric == metric:
            for c in m.comparisons:
                if c.arm_id == arm:
                    return c.absolute
    return None


def _compare(
    client: NextbestClient, arms: list[ArmTruth], as_of: datetime, window: float
) -> list[Comparison]:
    out = []
    reports: dict[str, pb.GetLiftReportResponse] = {}
    for truth in arms:
        if truth.units == 0:
            continue
        if truth.experiment_id not in reports:
            reports[truth.experiment_id] = client.lift_report(
                truth.experiment_id, as_of=as_of, window_days=window
            )
        for metric in ("conversion", "revenue"):
            e = _estimate(reports[truth.experiment_id], truth.arm, metric)
            values = [_optional(e, name) for name in ("value", "ci_low", "ci_high")]
            out.append(Comparison(truth, metric, *values))
    return out


def _optional(e: pb.LiftEstimate | None, name: str) -> float | None:
    """An optional field of an estimate; None when there is no estimate or the field is unset."""
    return getattr(e, name) if e is not None and e.HasField(name) else None


def _format(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:+.2f} pp" if metric == "conversion" else f"{value:+.2f}"


def comparison_table(comparisons: list[Comparison]) -> str:
    rows = [
        ("experiment", "arm vs control", "units", "metric", "estimate [95% CI]", "true effect", "covered")
    ]
    for c in comparisons:
        t = c.truth
        ci = f"[{_format(c.metric, c.ci_low)}, {_format(c.metric, c.ci_high)}]"
        rows.append(
            (
                t.experiment_id,
                f"{t.arm} vs {t.control}",
                f"{t.units:,}",
                c.metric + (" /unit" if c.metric == "revenue" else ""),
                f"{_format(c.metric, c.estimate)} {ci}",
                _format(c.metric, t.effects[c.metric]),
                {True: "yes", False: "NO", None: "n/a"}[c.covered],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _write_html(database_url: str, catalog: Catalog, as_of: datetime, window: float, out: Path) -> list[Path]:
    from nextbest.reports import ReportRequest, build_report, report_history
    from nextbest.reports.html import write_html
    from nextbest.store import Database

    db = Database(database_url)
    paths = []
    try:
        with db.reader.connect() as conn:
            for experiment in catalog.experiments:
                request = ReportRequest.validated(experiment.id, as_of=as_of, window_days=window)
                report = build_report(conn, catalog, request)
                if not report.units:
                    continue
                history = report_history(conn, catalog, request)
                paths.append(write_html(report, history, str(out / f"{experiment.id}.html")))
    finally:
        db.dispose()
    return paths


def run_simulation(options: SimulationOptions, say: Callable[[str], None] = print) -> SimulationOutcome:
    catalog = load_catalog(options.catalog or bundled_catalog_path())
    database_url = options.database_url
    if not options.target and database_url is None:
        path = Path("var") / f"simulation-{options.seed}-{time.strftime('%Y%m%d-%H%M%S')}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{path}"
    customers = population(options.customers, options.seed, options.start)
    flows = {a.id: a.flow for a in catalog.actions}
    with _server(options, database_url) as address, _client(options, address) as client:
        client.wait_until_serving()
        say(
            f"simulating {options.customers:,} customers over {options.days} days "
            f"(seed {options.seed}) through nextbest at {address}"
            + (f", database {database_url}" if database_url else "")
        )
        started = time.perf_counter()

        def progress(decisions: int, reached: datetime) -> None:
            elapsed = time.perf_counter() - started
            day = (reached - options.start).total_seconds() / 86400
            say(
                f"  ... day {day:.1f} of {options.days}: {decisions:,} decisions in {elapsed:.0f}s "
                f"({decisions / elapsed:,.0f}/s)"
            )

        result = Simulator(
            GrpcBackend(client, flows, {a.id: a.delay for a in catalog.actions}),
            customers,
            days=options.days,
            seed=options.seed,
            start=options.start,
            shards=options.shards,
            progress=progress,
            progress_every=options.progress_every,
        ).run()
        wall = time.perf_counter() - started
        bought = sum(1 for c in result.carts if c.bought)
        say(
            f"  {result.decisions:,} decisions and {result.events:,} events in {wall:.1f}s "
            f"({result.decisions / wall:,.0f} decisions/s); {len(result.carts):,} abandoned carts, "
            f"{bought:,} bought; {result.messages:,} messages delivered, {result.unsubscribes:,} unsubscribes"
        )
        as_of = result.end
        window = timedelta(days=options.window_days)
        arms = truths(result, catalog, as_of=as_of, window=window)
        truth_path = write_truth(options.truth, result, arms, as_of=as_of, window=window, seed=options.seed)
        say(f"  ground truth written to {truth_path}")
        comparisons = _compare(client, arms, as_of, options.window_days)
    outcome = SimulationOutcome(result, wall, database_url, truth_path, comparisons)
    say("\nLift reports (GetLiftReport) next to the simulator's true effects:")
    say(comparison_table(comparisons))
    if options.html_dir is not None and database_url is not None:
        outcome.html = _write_html(database_url, catalog, as_of, options.window_days, options.html_dir)
        for p in outcome.html:
            say(f"  HTML report written to {p}")
    return outcome
