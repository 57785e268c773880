"""nextbest serve | demo | migrate | check"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from nextbest.errors import CatalogError, NextbestError

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


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nextbest", description="Next-best-action service for e-commerce.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--host", help="listen address [NEXTBEST_HOST, default 127.0.0.1]")
    serve.add_argument("--port", type=int, help="listen port, 0 for any [NEXTBEST_PORT, default 50051]")
    serve.add_argument("--catalog", help="catalog YAML [NEXTBEST_CATALOG, default: the bundled example]")
    _add_store_args(serve)
    serve.add_argument("--workers", type=int, help="RPC threads [NEXTBEST_WORKERS, default 16]")
    serve.add_argument(
        "--migrate", action=argparse.BooleanOptionalAction, default=None, help="apply migrations at start"
    )
    serve.add_argument("--max-batch", type=int, help="most decisions per group commit [NEXTBEST_MAX_BATCH]")
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    _add_store_args(migrate)

    check = sub.add_parser("check", help="validate a catalog and print every problem")
    check.add_argument("catalog", nargs="?", help="catalog YAML (default: the bundled example)")

    demo = sub.add_parser(
        "demo", help="serve on SQLite and play a scripted customer story through the client"
    )
    demo.add_argument("--database-url", help="default: a fresh SQLite file under var/")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from nextbest.server import NextbestServer

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = NextbestServer(settings)
    server.start()

    def _shutdown(signum: int, _frame: Any) -> None:
        logger.info("signal %d: shutting down", signum)
        server.stop()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    server.wait()
    return 0


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


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "migrate":
            return _migrate(args)
        if args.command == "check":
            return _check(args)
        from nextbest.demo import run_demo

        return run_demo(args.database_url)
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
