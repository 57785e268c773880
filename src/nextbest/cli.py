"""nextbest serve | demo | simulate | decide | migrate | check | assign | report | stats | experiments |
train | evaluate | erase | retention | audit"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nextbest.campaign_cli import add_campaign_commands, run_campaign_command, run_segment
from nextbest.decide_cli import add_decide_command, run_decide
from nextbest.edge_cli import add_edge_command, run_edge
from nextbest.errors import CatalogError, NextbestError
from nextbest.privacy_cli import COMMANDS as PRIVACY_COMMANDS
from nextbest.privacy_cli import add_privacy_commands, run_privacy_command
from nextbest.score_cli import add_score_command, run_score
from nextbest.warehouse_cli import add_warehouse_commands, run_analyze, run_export

__all__ = ["main"]

logger = logging.getLogger("nextbest")


def _settings(args: argparse.Namespace) -> Any:
    from nextbest.settings import Settings

    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(_setting_problem(e) for e in exc.errors())
        raise SystemExit(f"nextbest: invalid setting: {problems}") from exc


def _setting_problem(error: Any) -> str:
    name = "_".join(str(p) for p in error["loc"])
    return f"--{name.replace('_', '-')} (NEXTBEST_{name.upper()}): {error['msg']}"


def _add_store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="sqlite:///path.db or postgresql+psycopg://user@host/db [NEXTBEST_DATABASE_URL]",
    )


def _add_training_args(parser: argparse.ArgumentParser) -> None:
    _add_store_args(parser)
    parser.add_argument("--csv", help="train from this CSV instead of the store (needs --schema)")
    parser.add_argument("--schema", help="YAML declaring the CSV's features, label, treatment and time")
    parser.add_argument("--outcome", help="CSV: the label column (default: the schema's label)")
    parser.add_argument(
        "--window-days", type=float, default=7.0, help="store: attribution window of a conversion (default 7)"
    )
    parser.add_argument("--as-of", help="store: ISO time; later data is ignored (default: now)")
    parser.add_argument("--models-dir", help="where versions are written (default: the bundled models/)")


def _add_model_commands(sub: Any) -> None:
    train = sub.add_parser("train", help="train a model from the store (or a CSV) and write its card")
    train.add_argument("kind", choices=["propensity", "uplift", "send-time", "churn"])
    _add_training_args(train)
    train.add_argument("--seed", type=int, default=7, help="random seed (training is deterministic for it)")
    train.add_argument("--promote", action="store_true", help="make the new version the one served")
    train.add_argument(
        "--horizon-days", type=float, default=30.0, help="churn: no order in this many days (default 30)"
    )
    train.add_argument(
        "--cutoffs", type=int, default=8, help="churn: customer cut-offs a week apart (default 8)"
    )
    train.add_argument(
        "--experiments",
        help="uplift from the store: the holdout experiments whose units' first exposures are pooled, "
        "comma-separated, e.g. a flow's holdout and a holdout per later step (default: the experiment "
        "with the most held-out units)",
    )

    train.add_argument(
        "--learner",
        choices=[
            "two-model",
            "shared-base",
            "x-learner",
            "x-learner-by-action",
            "transformed-outcome",
            "ensemble",
        ],
        help="uplift: the learner to keep (default: of two-model, shared-base and x-learner, the best "
        "Qini on the validation slice); every learner is fitted and reported in the card",
    )

    evaluate = sub.add_parser("evaluate", help="re-score a model version; --promote serves it")
    evaluate.add_argument("kind", choices=["propensity", "uplift", "send-time"])
    evaluate.add_argument("version", help="the version directory name (see models/<kind>/)")
    _add_training_args(evaluate)
    evaluate.add_argument("--promote", action="store_true", help="make this version the one served")


def _add_port_args(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port [NEXTBEST_METRICS_PORT]"
    )
    serve.add_argument(
        "--health-port",
        type=int,
        help="serve grpc.health.v1 alone (plaintext) on this port; the main port then refuses calls "
        "beyond --max-concurrent inside gRPC [NEXTBEST_HEALTH_PORT]",
    )


def _add_access_args(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--tokens-file",
        help="callers' tokens and certificate subjects with roles; turns authentication on "
        "(reloaded on SIGHUP and change) [NEXTBEST_TOKENS_FILE; inline: NEXTBEST_TOKENS]",
    )
    serve.add_argument("--tls-cert", help="server certificate (PEM) [NEXTBEST_TLS_CERT]")
    serve.add_argument("--tls-key", help="server private key (PEM) [NEXTBEST_TLS_KEY]")
    serve.add_argument(
        "--tls-client-ca", help="require client certificates signed by this CA [NEXTBEST_TLS_CLIENT_CA]"
    )
    serve.add_argument(
        "--insecure-open",
        action="store_true",
        default=None,
        help="serve a non-loopback --host without authentication [NEXTBEST_INSECURE_OPEN]",
    )
    serve.add_argument(
        "--reflection", action=argparse.BooleanOptionalAction, default=None, help="serve gRPC reflection"
    )


def _add_client_args(parser: argparse.ArgumentParser) -> None:
    """How a command that calls a server authenticates: a token and TLS."""
    parser.add_argument(
        "--token-file", help="file holding the bearer token [NEXTBEST_TOKEN_FILE, NEXTBEST_TOKEN]"
    )
    parser.add_argument("--tls", action="store_true", default=None, help="connect with TLS [NEXTBEST_TLS]")
    parser.add_argument("--tls-ca", help="CA of the server's certificate; implies --tls [NEXTBEST_TLS_CA]")
    parser.add_argument(
        "--tls-client-cert", help="client certificate (mutual TLS) [NEXTBEST_TLS_CLIENT_CERT]"
    )
    parser.add_argument("--tls-client-key", help="client private key (mutual TLS) [NEXTBEST_TLS_CLIENT_KEY]")
    parser.add_argument(
        "--tls-server-name", help="name the server certificate must carry [NEXTBEST_TLS_SERVER_NAME]"
    )


def _add_simulate_command(sub: Any) -> None:
    simulate = sub.add_parser(
        "simulate",
        help="play a simulated store through a server and check the lift reports against the truth",
    )
    simulate.add_argument("--customers", type=int, default=2000, help="customers (default 2000)")
    simulate.add_argument("--days", type=int, default=21, help="days of behaviour (default 21)")
    simulate.add_argument("--seed", type=int, default=1, help="the simulation is the same for a seed")
    simulate.add_argument(
        "--shards", type=int, default=8, help="concurrent callers, customers split among them (default 8)"
    )
    simulate.add_argument("--target", help="drive this server (HOST:PORT) instead of starting one")
    _add_client_args(simulate)
    simulate.add_argument(
        "--database-url", help="store of the started server (default: a fresh SQLite file under var/)"
    )
    simulate.add_argument("--catalog", help="catalog YAML (default: the bundled example)")
    simulate.add_argument("--models-dir", help="models of the started server (default: the bundled ones)")
    simulate.add_argument(
        "--truth", default="var/simulation-truth.json", help="where to write the ground truth (JSON)"
    )
    simulate.add_argument("--html-dir", default="var/reports", help="where to write the HTML reports")
    simulate.add_argument("--window-days", type=float, default=14.0, help="attribution window (default 14)")


def _add_client_commands(sub: Any) -> None:
    """The commands that call a server: ``simulate --target`` and ``decide``."""
    _add_simulate_command(sub)
    _add_client_args(add_decide_command(sub))


def _build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - a few lines per command
    parser = argparse.ArgumentParser(prog="nextbest", description="Next-best-action service for e-commerce.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--host", help="listen address [NEXTBEST_HOST, default 127.0.0.1]")
    serve.add_argument("--port", type=int, help="listen port, 0 for any [NEXTBEST_PORT, default 50051]")
    serve.add_argument("--catalog", help="catalog YAML [NEXTBEST_CATALOG, default: the bundled example]")
    _add_store_args(serve)
    serve.add_argument(
        "--models-dir",
        help="load promoted models from here [NEXTBEST_MODELS_DIR, default: the bundled models/]",
    )
    serve.add_argument("--workers", type=int, help="RPC threads [NEXTBEST_WORKERS, default 16]")
    serve.add_argument(
        "--max-concurrent",
        type=int,
        help="most calls at once; more get RESOURCE_EXHAUSTED [NEXTBEST_MAX_CONCURRENT, default: workers]",
    )
    serve.add_argument(
        "--processes", type=int, help="server processes sharing the port [NEXTBEST_PROCESSES, default 1]"
    )
    serve.add_argument(
        "--migrate", action=argparse.BooleanOptionalAction, default=None, help="apply migrations at start"
    )
    serve.add_argument(
        "--database-wait",
        type=float,
        help="seconds to wait for the database at start [NEXTBEST_DATABASE_WAIT, 30]",
    )
    serve.add_argument("--max-batch", type=int, help="most decisions per group commit [NEXTBEST_MAX_BATCH]")
    _add_port_args(serve)
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _add_access_args(serve)

    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    _add_store_args(migrate)

    check = sub.add_parser("check", help="validate a catalog and print every problem")
    check.add_argument("catalog", nargs="?", help="catalog YAML (default: the bundled example)")

    assign = sub.add_parser("assign", help="which arm a unit gets in an experiment, and why")
    assign.add_argument("--experiment", required=True, help="experiment id (from the catalog)")
    assign.add_argument("--unit", required=True, help="the unit (customer) id")
    assign.add_argument("--catalog", help="catalog YAML (default: the bundled example)")
    assign.add_argument("--seed", help="override the experiment's seed (ad-hoc use)")
    assign.add_argument("--hash-version", type=int, choices=[1, 2], help="override the hash version")

    report = sub.add_parser("report", help="lift report of an experiment")
    report.add_argument("--experiment", required=True, help="experiment id")
    # The defaults are ReportRequest's; the help repeats them (tests/test_cli.py checks that it does).
    report.add_argument(
        "--metric",
        action="append",
        dest="metrics",
        help="conversion, revenue, orders, visit or revenue_per_order "
        "(repeatable; default: conversion, revenue, orders)",
    )
    report.add_argument("--format", choices=["table", "json", "html"], default="table")
    report.add_argument("--output", help="file for --format html (default: reports/EXPERIMENT.html)")
    report.add_argument("--window-days", type=float, help="attribution window in days (default 14)")
    report.add_argument("--alpha", type=float, help="significance level, below 0.5 (default 0.05)")
    report.add_argument("--as-of", help="ISO time to report as of (default: now)")
    report.add_argument("--sequential", action="store_true", help="always-valid intervals (for daily looks)")
    report.add_argument("--catalog", help="catalog YAML (default: the bundled example)")
    _add_store_args(report)

    stats = sub.add_parser("stats", help="analyse per-arm sufficient statistics given as JSON")
    stats.add_argument("input", nargs="?", default="-", help="JSON file (default: standard input)")

    experiments = sub.add_parser("experiments", help="units per arm and the sample-ratio check")
    experiments.add_argument("--catalog", help="catalog YAML (default: the bundled example)")
    _add_store_args(experiments)

    _add_model_commands(sub)

    _add_client_commands(sub)
    add_privacy_commands(sub)
    add_warehouse_commands(sub)  # export, analyze, and report's --engine/--source
    add_campaign_commands(sub)  # segment count / sample
    add_score_command(sub)  # score --all | --stale | --status
    add_edge_command(sub)  # nginx in front of serve: refusals before Python

    demo = sub.add_parser(
        "demo",
        help="a customer's story through the client, then a simulated store's lift reports against the truth",
    )
    demo.add_argument("--database-url", help="default: fresh SQLite files under var/")
    demo.add_argument("--customers", type=int, default=2000, help="simulated customers (default 2000)")
    demo.add_argument("--days", type=int, default=21, help="simulated days (default 21)")
    return parser


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from nextbest.server.logs import configure_logging

    configure_logging(settings.log_level)
    from nextbest.server.tls import check_exposure

    check_exposure(settings)  # once, before any process starts (each server checks again)
    if settings.processes > 1:
        return _serve_processes(settings)
    return _serve_one(settings)


def _serve_one(settings: Any) -> int:
    import gc

    from nextbest.server import NextbestServer

    server = NextbestServer(settings)
    # What start-up built (modules, the catalog, the models: ~120,000 tracked objects) lives as long as
    # the process. Left to the collector, each full collection walks all of it while holding the GIL
    # (0.25-0.3 s on this 2-vCPU host under load), stalling every call in flight; frozen, a full
    # collection walks only what calls created since.
    gc.freeze()
    server.start()

    def _shutdown(signum: int, _frame: Any) -> None:
        logger.info("signal %d: shutting down", signum)
        server.stop()

    def _reload(signum: int, _frame: Any) -> None:
        logger.info("signal %d: reloading models and tokens", signum)
        server.reload_models()
        server.reload_access()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    signal.signal(signal.SIGHUP, _reload)
    server.wait()
    return 0


def _serve_child(settings: Any) -> None:
    from nextbest.server.logs import configure_logging

    configure_logging(settings.log_level)
    _serve_one(settings)


def _serve_processes(settings: Any) -> int:
    """Python runs one thread of Python at a time per process; a host with several cores serves from
    several processes sharing the port (the kernel spreads connections across them). Migrations run once,
    here, before the servers start; each process then checks the catalog and serves on its own."""
    from nextbest.server.process import supervise
    from nextbest.server.startup import wait_for_database
    from nextbest.store import Database, upgrade

    if settings.port == 0:
        raise SystemExit("nextbest: --processes needs a fixed --port (the processes share it)")
    if settings.migrate:
        db = Database(settings.database_url)
        wait_for_database(db, settings.database_wait)
        upgrade(db)
        db.dispose()
    children = []
    for index in range(settings.processes):
        metrics = None if settings.metrics_port is None else settings.metrics_port + index
        children.append((settings.model_copy(update={"migrate": False, "metrics_port": metrics}),))
    logger.info("serving on %s:%d from %d processes", settings.host, settings.port, len(children))
    return supervise(_serve_child, children)


def _migrate(args: argparse.Namespace) -> int:
    from nextbest.store import Database
    from nextbest.store.migrate import current_revision, upgrade

    db = Database(_settings(args).database_url)
    upgrade(db)
    print(f"schema at revision {current_revision(db)}")
    db.dispose()
    return 0


def _check(args: argparse.Namespace) -> int:
    from nextbest.catalog import bundled_catalog_path, load_catalog

    catalog = load_catalog(args.catalog or bundled_catalog_path())
    flows = len(catalog.flows)
    print(
        f"{catalog.source}: ok — version {catalog.version}, {len(catalog.actions)} actions in {flows} flows, "
        f"triggers: {', '.join(sorted(catalog.triggers))}"
    )
    return 0


def _assign(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from nextbest.catalog import bundled_catalog_path, load_catalog
    from nextbest.experiments import assign

    catalog = load_catalog(args.catalog or bundled_catalog_path())
    experiment = catalog.experiment(args.experiment)
    if experiment is None:
        known = ", ".join(e.id for e in catalog.experiments) or "none"
        print(
            f"nextbest: no experiment {args.experiment!r} in {catalog.source} (experiments: {known})",
            file=sys.stderr,
        )
        return 2
    if args.seed:
        experiment = replace(experiment, seed=args.seed)
    if args.hash_version:
        experiment = replace(experiment, hash_version=args.hash_version)
    result = assign(experiment, args.unit)
    arm = result.arm
    print(f"experiment   {experiment.id} (seed {experiment.seed!r}, hash version {experiment.hash_version})")
    print(f"unit         {args.unit}")
    print(f"bucket       {result.bucket:.4f}")
    if arm is None:
        print(f"arm          none: not in the experiment ({result.reason})")
    else:
        effect = "no action in scope (held out)" if arm.no_action else "treated"
        if arm.parameters or arm.channel or arm.delay is not None:
            effect += f", overrides: {dict(arm.parameters or {})}"
            effect += f" channel={arm.channel}" if arm.channel else ""
            effect += f" delay={arm.delay}" if arm.delay is not None else ""
        print(f"arm          {arm.id} (weight {arm.weight:g}): {effect}")
        print(f"why          {result.reason}")
    scope = [
        f"flows={sorted(experiment.flows)}" if experiment.flows else "",
        f"actions={sorted(experiment.actions)}" if experiment.actions else "",
        f"classes={sorted(str(c) for c in experiment.classes)}" if experiment.classes else "",
    ]
    print(
        f"scope        {' '.join(p for p in scope if p) or 'every non-transactional action'}; "
        "assigned only when an in-scope action passes consent, suppression and its rule"
    )
    moved_to = sorted({str(a.channel) for a in experiment.arms if a.channel is not None})
    if moved_to:
        print(
            f"channels     arms send on {', '.join(moved_to)}: a unit is entered only when each of these "
            "channels passes consent and suppression too;\n             otherwise it gets the action as "
            "declared, unassigned"
        )
    return 0


def _experiments(args: argparse.Namespace) -> int:
    from nextbest.catalog import bundled_catalog_path, load_catalog
    from nextbest.stats.srm import srm_check
    from nextbest.store import Database, Store

    catalog = load_catalog(args.catalog or bundled_catalog_path())
    store = Store(Database(_settings(args).database_url))
    try:
        for exp in catalog.experiments:
            counts = store.arm_units(exp.id)
            multiple = counts.pop("__multiple__", 0)
            srm = srm_check(counts, {a.id: a.weight for a in exp.arms})
            arms = ", ".join(f"{a.id} {counts.get(a.id, 0)} ({a.weight:g})" for a in exp.arms)
            flag = "SRM ALARM" if srm.alarm else "ok"
            check = srm.error or f"sample ratio chi2={srm.chi2:.2f} p={srm.p_value:.4g} {flag}"
            print(
                f"{exp.id}: {arms}; {check}"
                + (f"; {multiple} unit(s) in several arms, excluded" if multiple else "")
            )
    finally:
        store.close()
    return 0


_REPORT_FLAGS = {
    "experiment_id": "--experiment",
    "metrics": "--metric",
    "window_days": "--window-days",
    "alpha": "--alpha",
}


def _report(args: argparse.Namespace) -> int:
    from datetime import datetime

    from nextbest.catalog import bundled_catalog_path, load_catalog
    from nextbest.errors import InvalidArgumentError
    from nextbest.reports import ReportRequest, build_report, report_history
    from nextbest.server.startup import require_schema
    from nextbest.store import Database

    try:
        as_of = datetime.fromisoformat(args.as_of) if args.as_of else None
    except ValueError:
        print(
            f"nextbest: --as-of {args.as_of!r} is not an ISO time such as 2026-11-23T09:00:00Z",
            file=sys.stderr,
        )
        return 2
    try:
        request = ReportRequest.validated(
            args.experiment,
            args.metrics or (),
            window_days=args.window_days,
            as_of=as_of,
            sequential=args.sequential,
            alpha=args.alpha,
        )
    except InvalidArgumentError as exc:
        for v in exc.violations:
            flag = _REPORT_FLAGS.get(v.field.split("[")[0], v.field)
            print(f"nextbest report: {flag}: {v.description}", file=sys.stderr)
        return 2
    catalog = load_catalog(args.catalog or bundled_catalog_path())
    if args.engine != "store" or args.source:  # DuckDB or Spark over an export (nextbest.warehouse_cli)
        from nextbest.warehouse_cli import report_runner

        with report_runner(args.engine, args.source) as runner:
            report = build_report(runner, catalog, request)
            history = report_history(runner, catalog, request) if args.format == "html" else []
        return _print_report(args, report, history)
    db = Database(_settings(args).database_url)
    # One line, not a traceback, for a database nextbest never wrote.
    require_schema(db, "is --database-url (NEXTBEST_DATABASE_URL) the server's database?")
    try:
        with db.reader.connect() as conn:
            report = build_report(conn, catalog, request)
            history = report_history(conn, catalog, request) if args.format == "html" else []
    finally:
        db.dispose()
    return _print_report(args, report, history)


def _print_report(args: argparse.Namespace, report: Any, history: Any) -> int:
    import json

    from nextbest.reports.html import write_html
    from nextbest.reports.render import report_to_json, report_to_table

    if args.format == "json":
        print(json.dumps(report_to_json(report), indent=2, allow_nan=False))
    elif args.format == "html":
        print(f"report written to {write_html(report, history, args.output)}")
    else:
        print(report_to_table(report))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from nextbest.simulate.command import SimulationOptions, run_simulation

    problems = [
        f"--{name} must be at least 1"
        for name, value in (("customers", args.customers), ("days", args.days), ("shards", args.shards))
        if value < 1
    ]
    if args.window_days <= 0:
        problems.append("--window-days must be positive")
    if args.target and (args.database_url or args.models_dir):
        problems.append("--database-url and --models-dir configure a started server; not with --target")
    if not args.target and any(
        getattr(args, name) for name in ("token_file", "tls", "tls_ca", "tls_client_cert", "tls_server_name")
    ):
        problems.append("--token-file and --tls* say how to reach --target; give --target too")
    if problems:
        for problem in problems:
            print(f"nextbest simulate: {problem}", file=sys.stderr)
        return 2
    target_settings = _settings(args) if args.target else None
    if target_settings is not None:
        from nextbest.client import NextbestClient

        try:  # an unreadable token file or certificate: one line now, not a traceback later
            NextbestClient.from_settings(args.target, target_settings).close()
        except ValueError as exc:
            print(f"nextbest simulate: {exc}", file=sys.stderr)
            return 2
    run_simulation(
        SimulationOptions(
            customers=args.customers,
            days=args.days,
            seed=args.seed,
            shards=args.shards,
            target=args.target,
            database_url=args.database_url,
            catalog=Path(args.catalog) if args.catalog else None,
            models_dir=Path(args.models_dir) if args.models_dir else None,
            truth=Path(args.truth),
            html_dir=Path(args.html_dir) if args.html_dir else None,
            window_days=args.window_days,
            target_settings=target_settings,
        )
    )
    return 0


def _stats(args: argparse.Namespace) -> int:
    import json

    from nextbest.errors import InvalidArgumentError
    from nextbest.stats.io import StatsRequest, analysis_to_json, run

    source = "standard input" if args.input == "-" else args.input
    try:
        text = sys.stdin.read() if args.input == "-" else open(args.input, encoding="utf-8").read()  # noqa: SIM115
        request = StatsRequest.model_validate_json(text)
    except OSError as exc:
        print(f"nextbest: cannot read {source}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "(top level)"
            print(f"{source}: {where}: {error['msg']}", file=sys.stderr)
        print("nextbest: invalid stats input; the format is in the README (nextbest stats)", file=sys.stderr)
        return 2
    try:
        analysis = run(request)
    except InvalidArgumentError as exc:
        for violation in exc.violations:
            print(f"{source}: {violation.field}: {violation.description}", file=sys.stderr)
        print("nextbest: invalid stats input; the format is in the README (nextbest stats)", file=sys.stderr)
        return 2
    print(json.dumps(analysis_to_json(analysis), indent=2, allow_nan=False))
    return 0


def _uplift_options(args: argparse.Namespace, kind: str) -> tuple[tuple[str, ...], str | None]:
    """``--experiments`` and ``--learner``, which only an uplift model takes."""
    given = getattr(args, "experiments", None) or ""
    experiments = tuple(dict.fromkeys(e.strip() for e in given.split(",") if e.strip()))
    if given and (kind != "uplift" or args.csv or not experiments):
        raise SystemExit(
            "nextbest: --experiments names the holdout experiments an uplift model trains on from the "
            "store, e.g. --experiments cart_flow_holdout,explore_cart_nudge_sms"
        )
    learner = getattr(args, "learner", None)
    if learner is not None and kind != "uplift":
        raise SystemExit(f"nextbest: --learner chooses an uplift learner; {kind} has none")
    return experiments, learner


def _train_or_evaluate(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    import json
    from datetime import datetime, timedelta
    from pathlib import Path

    from nextbest.models.artifacts import ModelKind, bundled_models_path, promote
    from nextbest.settings import DEFAULT_DATABASE_URL
    from nextbest.training import Source, evaluate, train

    kind = ModelKind(args.kind)
    models_dir = Path(args.models_dir) if args.models_dir else bundled_models_path() or Path("models")
    as_of = None
    if args.as_of:
        try:
            as_of = datetime.fromisoformat(args.as_of)
        except ValueError:
            raise SystemExit(f"nextbest: --as-of {args.as_of!r} is not an ISO time") from None
        if as_of.tzinfo is None:
            raise SystemExit("nextbest: --as-of needs a time zone, e.g. 2026-11-01T00:00:00Z")
    if args.window_days <= 0:
        raise SystemExit("nextbest: --window-days must be positive")
    if getattr(args, "horizon_days", 1.0) <= 0 or getattr(args, "cutoffs", 8) < 3:
        raise SystemExit("nextbest: --horizon-days must be positive and --cutoffs at least 3")
    experiments, learner = _uplift_options(args, kind.value)
    source = Source(
        database_url=None
        if args.csv
        else (args.database_url or os.environ.get("NEXTBEST_DATABASE_URL") or DEFAULT_DATABASE_URL),
        csv=Path(args.csv) if args.csv else None,
        schema=Path(args.schema) if args.schema else None,
        outcome=args.outcome,
        window=timedelta(days=args.window_days),
        as_of=as_of,
        horizon=timedelta(days=getattr(args, "horizon_days", 30.0)),
        cutoffs=getattr(args, "cutoffs", 8),
        experiments=experiments,
    )
    if source.database_url is not None:
        from nextbest.server.startup import require_schema
        from nextbest.store import Database

        db = Database(source.database_url)
        try:  # one line, not a traceback, for a database nextbest never wrote
            require_schema(db, "is --database-url (NEXTBEST_DATABASE_URL) the server's database?")
        finally:
            db.dispose()
    try:
        if args.command == "train":
            command = "nextbest " + " ".join(argv if argv is not None else sys.argv[1:])
            directory, card = train(
                kind, source, models_dir, args.seed, promote_it=args.promote, command=command, learner=learner
            )
            print(f"{kind.value} {card.version} written to {directory}")
            print(json.dumps(card.metrics, indent=2))
            if args.promote:
                print(f"promoted: the server loads {card.version} at start or on ReloadModels / SIGHUP")
            return 0
        metrics = evaluate(kind, args.version, source, models_dir)
        print(json.dumps(metrics, indent=2))
        if args.promote:
            promote(models_dir, kind, args.version)
            print(f"promoted {kind.value} {args.version}")
        return 0
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"nextbest {args.command}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "migrate":
            return _migrate(args)
        if args.command == "check":
            return _check(args)
        if args.command == "assign":
            return _assign(args)
        if args.command == "experiments":
            return _experiments(args)
        if args.command == "stats":
            return _stats(args)
        if args.command == "report":
            return _report(args)
        if args.command in ("train", "evaluate"):
            return _train_or_evaluate(args, argv)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "decide":
            return run_decide(args, _settings)
        if args.command in PRIVACY_COMMANDS:
            return run_privacy_command(args, _settings)
        if args.command == "export":
            return run_export(args, _settings(args).database_url)
        if args.command == "analyze":
            return run_analyze(args)
        if args.command == "segment":
            return run_segment(args, _settings)
        if args.command == "campaign":
            return run_campaign_command(args, _settings)
        if args.command == "score":
            return run_score(args, _settings)
        if args.command == "edge":
            return run_edge(args)
        from nextbest.demo import run_demo

        return run_demo(args.database_url, args.customers, args.days)
    except CatalogError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        print(
            f"nextbest: {len(exc.problems)} catalog problem(s); fix them and run `nextbest check` again",
            file=sys.stderr,
        )
        return 2
    except NextbestError as exc:
        print(f"nextbest: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`nextbest report ... | head`): stop quietly, as other command-line tools
        # do; stdout goes to /dev/null so that Python's flush at exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
