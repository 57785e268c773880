"""``nextbest segment count|sample NAME``: a catalog segment evaluated over every stored customer, streamed
(memory stays flat whatever the number of customers). ``nextbest campaign plan|run NAME``: a catalog
campaign's dry run, and its run through the decision pipeline in batches, resumable with the same run id."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from nextbest.warehouse_cli import UsageError, moment_arg

__all__ = ["add_campaign_commands", "run_campaign_command", "run_segment"]


def add_campaign_commands(sub: Any) -> None:
    segment = sub.add_parser("segment", help="count or sample a catalog segment's customers in the store")
    actions = segment.add_subparsers(dest="segment_command", required=True, metavar="{count,sample}")
    count = actions.add_parser("count", help="how many stored customers are in the segment now")
    sample = actions.add_parser("sample", help="the first customers of the segment (stored ids)")
    sample.add_argument("--limit", type=int, default=10, help="how many (default 10)")
    sample.add_argument("--format", choices=["table", "json"], default="table")
    for p in (count, sample):
        p.add_argument("name", help="the segment's id in the catalog")
        p.add_argument("--catalog", help="catalog YAML (default: the bundled example)")
        p.add_argument("--as-of", help="ISO time the conditions are evaluated at (default: now)")
        p.add_argument(
            "--database-url",
            help="sqlite:///path.db or postgresql+psycopg://user@host/db [NEXTBEST_DATABASE_URL]",
        )
        p.add_argument(
            "--models-dir",
            help="churn model for scores that are missing or stale [NEXTBEST_MODELS_DIR, default models/]",
        )

    campaign = sub.add_parser("campaign", help="plan (dry run) or run a catalog campaign against the store")
    steps = campaign.add_subparsers(dest="campaign_command", required=True, metavar="{plan,run}")
    plan = steps.add_parser("plan", help="what a run would send now, by channel, hour and refusal reason")
    plan.add_argument("--format", choices=["table", "json"], default="table")
    run = steps.add_parser("run", help="decide for every member of the audience; resumable, idempotent")
    run.add_argument(
        "--run-id",
        help="the run's id: running again with the same id replays what it decided and sends nobody "
        "twice; a new id is a new wave (default: the campaign's start time)",
    )
    run.add_argument("--batch-size", type=int, default=500, help="members per batch, 1 to 500 (default 500)")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    for p in (plan, run):
        p.add_argument("name", help="the campaign's id in the catalog")
        p.add_argument("--catalog", help="catalog YAML (default: the bundled example)")
        p.add_argument(
            "--database-url",
            help="sqlite:///path.db or postgresql+psycopg://user@host/db [NEXTBEST_DATABASE_URL]",
        )


def _fail(message: str, command: str = "segment") -> int:
    print(f"nextbest {command}: {message}", file=sys.stderr)
    return 2


def run_segment(args: argparse.Namespace, settings: Callable[[argparse.Namespace], Any]) -> int:
    from nextbest.campaigns import SegmentCount, segment_members
    from nextbest.campaigns.scores import NoScoresError, audience_states
    from nextbest.catalog import bundled_catalog_path, load_catalog
    from nextbest.catalog.rules import score_reads
    from nextbest.score_cli import load_scorer
    from nextbest.server.startup import require_schema
    from nextbest.store import Database
    from nextbest.store.scan import ScoreTally

    catalog = load_catalog(args.catalog or bundled_catalog_path())
    segment = catalog.segments.get(args.name)
    if segment is None:
        known = ", ".join(sorted(catalog.segments)) or "none: add a `segments:` section"
        return _fail(f"no segment {args.name!r} in catalog {catalog.source} (segments: {known})")
    try:
        now = moment_arg(args.as_of, "--as-of") or datetime.now(UTC)
    except UsageError as exc:
        return _fail(str(exc))
    limit: int = getattr(args, "limit", 1)
    if limit < 1:
        return _fail(f"--limit must be at least 1, got {limit}")
    config = settings(args)
    scorer = load_scorer(config.models_dir)[0] if score_reads(segment.condition.reads) else None
    db = Database(config.database_url)
    try:
        require_schema(db, "is --database-url (NEXTBEST_DATABASE_URL) the server's database?")
        tally = SegmentCount(segment.id)
        scores = ScoreTally()
        try:
            states = audience_states(db, segment, scorer, now, scores)
        except NoScoresError as exc:
            return _fail(str(exc))
        members = segment_members(segment, states, now, tally)
        if args.segment_command == "count":
            for _ in members:
                pass
            failed = sum(tally.failed.values())
            print(
                f"{segment.id}: {tally.members} of {tally.scanned} customers"
                + (f" ({failed} left out: the condition failed for them)" if failed else "")
            )
            for reason, n in tally.failed.most_common(3):
                print(f"  {n} x {reason}", file=sys.stderr)
            if score_reads(segment.condition.reads):
                print(_score_note(scores, scorer), file=sys.stderr)
            return 0
        rows = []
        for state in members:
            rows.append(state)
            if len(rows) >= limit:
                break
        if args.format == "json":
            print(json.dumps([_row(s, now) for s in rows], indent=2))
        else:
            for s in rows:
                r = _row(s, now)
                print(f"{r['user_id']}  orders={r['orders_count']} revenue={r['total_revenue']:.2f}")
        return 0
    finally:
        db.dispose()


def _score_note(scores: Any, scorer: Any) -> str:
    """Where the scores the segment read came from."""
    note = f"scores: {scores.fresh} stored and fresh"
    if scores.rescored:
        note += f", {scores.rescored} missing or stale computed now with {scorer.version} (not stored)"
    if scores.stale_kept:
        note += f", {scores.stale_kept} stale used as stored (no churn model to compute them again)"
    if scores.missing:
        note += f", {scores.missing} missing (those customers are left out)"
    if scores.rescored or scores.stale_kept or scores.missing:
        note += "; `nextbest score --stale` stores fresh ones"
    return note


def _row(state: Any, now: datetime) -> dict[str, Any]:
    from nextbest.decision.rules import customer_variables
    from nextbest.state.scored import scores_of

    return {"user_id": state.user_id, **customer_variables(state, now), **scores_of(state)}


def run_campaign_command(args: argparse.Namespace, settings: Callable[[argparse.Namespace], Any]) -> int:
    from nextbest.campaigns import (
        RUN_ID,
        RUN_ID_RULE,
        OutsideRunWindowError,
        TargetingError,
        plan_campaign,
        run_campaign,
    )
    from nextbest.campaigns.scores import NoScoresError, audience_states
    from nextbest.catalog import load_catalog
    from nextbest.decision.engine import DecisionEngine
    from nextbest.models.compiled import ForestCompiler
    from nextbest.models.registry import ModelRegistry
    from nextbest.server.startup import require_schema
    from nextbest.store import Database, Store

    config = settings(args)
    catalog = load_catalog(args.catalog or config.catalog)
    campaign = catalog.campaigns.get(args.name)
    if campaign is None:
        known = ", ".join(sorted(catalog.campaigns)) or "none: add a `campaigns:` section"
        return _fail(
            f"no campaign {args.name!r} in catalog {catalog.source} (campaigns: {known})", "campaign"
        )
    ids = config.customer_ids()
    if ids.hashing:
        return _fail(
            "the store keeps customer ids as keyed digests, and a campaign needs the ids it decides for; "
            "run campaigns on a store without NEXTBEST_CUSTOMER_ID_KEY",
            "campaign",
        )
    batch_size = getattr(args, "batch_size", 500)
    if not 1 <= batch_size <= 500:
        return _fail(f"--batch-size must be 1 to 500, got {batch_size}", "campaign")
    db = Database(config.database_url)
    try:
        require_schema(db, "is --database-url (NEXTBEST_DATABASE_URL) the server's database?")
        store = Store(db, max_batch=config.max_batch, ids=ids)
        # Scored as the server scores: compiled trees where they are ready (from the cache at once, else
        # compiled in the background while LightGBM scores), not LightGBM's predict all along.
        compiler = ForestCompiler(config.model_cache_dir) if config.compiled_scoring else None
        engine = DecisionEngine(catalog, store, models=ModelRegistry(config.models_dir, compiler))
        now = engine.clock()
        segment = catalog.segments[campaign.audience]
        churn = engine.models.current.churn if engine.models is not None else None

        def audience() -> Any:
            # The members' stored scores when the audience reads them (missing or stale ones computed
            # again with the promoted churn model).
            return audience_states(db, segment, churn, now)

        if args.campaign_command == "plan":
            try:
                planned = plan_campaign(engine, campaign, audience(), now)
            except (TargetingError, NoScoresError) as exc:
                return _fail(str(exc), "campaign")
            _print_plan(planned, args.format)
            return 0
        run_id = args.run_id or campaign.start.strftime("%Y%m%dT%H%M%SZ")
        if not RUN_ID.fullmatch(run_id):
            return _fail(f"--run-id {run_id[:80]!r} must be {RUN_ID_RULE}", "campaign")

        def progress(run: Any) -> None:
            if not args.quiet:
                print(
                    f"\r{campaign.id} [{run_id}]: {run.segment.scanned} scanned, {run.decided} decided, "
                    f"{run.sent} sent",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

        try:
            done = run_campaign(
                engine, campaign, audience(), run_id, now, batch_size=batch_size, progress=progress
            )
        except (OutsideRunWindowError, TargetingError, NoScoresError) as exc:
            return _fail(str(exc), "campaign")
        if not args.quiet:
            print(file=sys.stderr)
        failed = sum(done.failed.values())
        print(
            f"{campaign.id} run {run_id}: {done.segment.members} in {campaign.audience} "
            f"of {done.segment.scanned} customers; {done.decided} decided ({done.replayed} replayed from an "
            f"earlier attempt), {done.sent} sent, {done.held_out} held out"
            + (", budget reached" if done.budget_reached else "")
            + (f"; {failed} failed ({dict(done.failed)}): run again with --run-id {run_id}" if failed else "")
        )
        return 1 if failed else 0
    finally:
        db.dispose()


def _plan_figures(plan: Any) -> dict[str, Any]:
    def pair(bounds: tuple[float, float] | None) -> list[float] | None:
        return None if bounds is None else [round(bounds[0], 4), round(bounds[1], 4)]

    mde = plan.minimum_detectable_effect()
    return {
        "campaign": plan.campaign,
        "targeting": plan.targeting,
        "scanned": plan.segment.scanned,
        "audience": plan.segment.members,
        "decided": plan.decided,
        "sends": plan.sends,
        "held_out": plan.held_out,
        "over_budget": plan.over_budget,
        "not_targeted": plan.not_targeted,
        "nothing_sent": plan.nothing,
        "refusals": dict(plan.refusals),
        "refusals_of_decided": dict(plan.decided_refusals),
        "by_channel": dict(plan.by_channel),
        "by_hour": dict(sorted(plan.by_hour.items())),
        "expected_value": round(plan.expected_value, 6),
        "expected_discount_spend": round(plan.discount_spend, 4),
        "cost": round(plan.cost, 4),
        "incremental": {
            "sends_estimated": plan.estimated,
            "conversions": round(plan.incremental_conversions, 4) if plan.estimated else None,
            "conversions_95": pair(plan.conversions_interval()),
            "revenue": round(plan.incremental_revenue, 4) if plan.estimated else None,
            "revenue_95": pair(plan.revenue_interval()),
            "net_revenue": round(plan.incremental_revenue - plan.cost, 4) if plan.estimated else None,
            "model_error_per_send": plan.model_error,
        },
        "holdout": {
            "held_out": plan.held_out,
            "treated": plan.sends,
            "mde_conversion": mde["conversion"].value,
            "mde_revenue_per_member": mde["revenue"].value,
            "mde_error": mde["conversion"].error or None,
        },
        "failed": dict(plan.failed),
    }


def _print_plan(plan: Any, fmt: str) -> None:
    figures = _plan_figures(plan)
    if fmt == "json":
        print(json.dumps(figures, indent=2))
        return
    print(
        f"campaign {plan.campaign} ({plan.targeting}): audience {plan.segment.members} of "
        f"{plan.segment.scanned} customers"
    )
    print(
        f"  would decide {plan.decided}: send {plan.sends}, hold out {plan.held_out}"
        + (f"; {plan.over_budget} more over the budget" if plan.over_budget else "")
    )
    print(f"  nothing to send for {plan.nothing}; left out by the targeting rule {plan.not_targeted}")
    for reason, n in plan.refusals.most_common():
        print(f"  refused {n:>8}  {reason}")
    for channel, n in plan.by_channel.most_common():
        print(f"  channel {channel}: {n}")
    for hour, n in sorted(plan.by_hour.items()):
        print(f"  at {hour}: {n}")
    print(
        f"  expected value of the sends: {plan.expected_value:.2f}; discount spend {plan.discount_spend:.2f}"
    )
    incremental = figures["incremental"]
    if plan.estimated:
        lo, hi = incremental["revenue_95"]
        clo, chi = incremental["conversions_95"]
        print(
            f"  expected incremental revenue {plan.incremental_revenue:.2f} (95 % {lo:.2f} to {hi:.2f}), "
            f"net of cost {plan.incremental_revenue - plan.cost:.2f}; conversions "
            f"{plan.incremental_conversions:.1f} ({clo:.1f} to {chi:.1f}), over {plan.estimated} sends"
        )
    else:
        print("  expected incremental revenue: unknown (no uplift model covers the campaign's flow)")
    holdout = figures["holdout"]
    if holdout["mde_conversion"] is not None:
        print(
            f"  holdout {plan.held_out} against {plan.sends} sent: minimum detectable effect "
            f"{100 * holdout['mde_conversion']:.2f} pp conversion, "
            f"{holdout['mde_revenue_per_member']:.2f} revenue per member (80 % power, 5 % two-sided)"
        )
    else:
        print(f"  holdout {plan.held_out}: {holdout['mde_error']}")
