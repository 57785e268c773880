"""``nextbest score --all | --stale``: the customers' predicted scores (churn risk, purchase propensity)
computed with the promoted churn model and stored, page by page, with the model version and the time;
``nextbest score --status``: how many customers have scores and how many are stale."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from nextbest.warehouse_cli import UsageError, moment_arg

__all__ = ["add_score_command", "load_scorer", "run_score"]


def add_score_command(sub: Any) -> None:
    score = sub.add_parser(
        "score", help="compute and store every customer's churn risk and purchase propensity"
    )
    which = score.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="score every customer")
    which.add_argument(
        "--stale", action="store_true", help="score customers without scores or changed since theirs"
    )
    which.add_argument("--status", action="store_true", help="how many scores there are; nothing written")
    score.add_argument("--as-of", help="ISO time the scores are computed at (default: now)")
    score.add_argument("--page", type=int, default=2000, help="customers per page (default 2000)")
    score.add_argument("--quiet", action="store_true", help="no progress line")
    score.add_argument(
        "--database-url",
        help="sqlite:///path.db or postgresql+psycopg://user@host/db [NEXTBEST_DATABASE_URL]",
    )
    score.add_argument(
        "--models-dir",
        help="the promoted churn model is loaded from here [NEXTBEST_MODELS_DIR, default models/]",
    )


def _fail(message: str) -> int:
    print(f"nextbest score: {message}", file=sys.stderr)
    return 2


def load_scorer(models_dir: Any) -> tuple[Any, str]:
    """The promoted churn model under ``models_dir``, or None and why not."""
    from nextbest.models.artifacts import ModelKind
    from nextbest.models.registry import ModelRegistry

    if models_dir is None:
        return None, "no models directory (give --models-dir or NEXTBEST_MODELS_DIR)"
    models = ModelRegistry(models_dir).current
    status = next(s for s in models.statuses if s.kind is ModelKind.CHURN)
    if models.churn is None:
        return None, f"no usable churn model in {models_dir}: {status.state.value} ({status.detail})"
    return models.churn, ""


def run_score(args: argparse.Namespace, settings: Callable[[argparse.Namespace], Any]) -> int:
    from nextbest.campaigns.scores import score_store
    from nextbest.server.startup import require_schema
    from nextbest.store import Database
    from nextbest.store.scores import score_summary

    if args.page < 1:
        return _fail(f"--page must be at least 1, got {args.page}")
    try:
        now = moment_arg(args.as_of, "--as-of") or datetime.now(UTC)
    except UsageError as exc:
        return _fail(str(exc))
    config = settings(args)
    db = Database(config.database_url)
    try:
        require_schema(db, "is --database-url (NEXTBEST_DATABASE_URL) the server's database?")
        if args.status:
            summary = score_summary(db)
            print(
                f"{summary.scored} of {summary.customers} customers scored, {summary.stale} stale; "
                f"by model: {dict(summary.versions) or 'none'}; last scored at "
                f"{summary.last_scored_at.isoformat() if summary.last_scored_at else 'never'}"
            )
            if summary.scored < summary.customers or summary.stale:
                print("run `nextbest score --stale` to score the others", file=sys.stderr)
            return 0
        scorer, why = load_scorer(config.models_dir)
        if scorer is None:
            return _fail(f"{why}; train one with `nextbest train churn --promote`")

        def progress(run: Any) -> None:
            if not args.quiet:
                rate = run.scanned / run.seconds if run.seconds else 0.0
                print(f"\r{run.scanned} scored ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)

        run = score_store(db, scorer, now, stale_only=args.stale, page=args.page, progress=progress)
        if not args.quiet and run.scanned:
            print(file=sys.stderr)
        rate = run.scanned / run.seconds if run.seconds else 0.0
        print(
            f"{run.written} customers scored with {scorer.version} at {now.isoformat()} "
            f"in {run.seconds:.1f} s ({rate:,.0f} customers/s, {run.cpu_seconds:.1f} s CPU in this process)"
        )
        return 0
    finally:
        db.dispose()
