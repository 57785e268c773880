"""``nextbest edge``: nginx in front of ``nextbest serve``, refusing decision calls beyond the limit in C
before they cost the server's Python anything (``nextbest.server.edge``). ``--print`` writes the
configuration for an nginx run by other means (a container, a sidecar) instead of running one."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_edge_command", "run_edge"]


def _default_limit() -> int:
    # About two decision calls per core: more only queue for the GIL (benchmarks/RESULTS.md, issue 19).
    return 2 * (os.cpu_count() or 1)


def add_edge_command(sub: Any) -> None:
    edge = sub.add_parser(
        "edge",
        help="run nginx in front of the server: calls beyond --max-concurrent are refused before Python",
    )
    edge.add_argument("--listen", required=True, help="host:port the callers use (e.g. 0.0.0.0:50050)")
    edge.add_argument(
        "--upstream",
        default="127.0.0.1:50051",
        help="host:port of `nextbest serve` (default 127.0.0.1:50051)",
    )
    edge.add_argument(
        "--max-concurrent",
        type=int,
        default=_default_limit(),
        help="decision calls in the server at once; more get RESOURCE_EXHAUSTED from nginx "
        "(default: 2 per core, here %(default)s; keep the server's own --max-concurrent at least this)",
    )
    edge.add_argument("--workers", type=int, default=1, help="nginx worker processes (default 1)")
    edge.add_argument("--tls-cert", type=Path, help="certificate (PEM): TLS at the edge")
    edge.add_argument("--tls-key", type=Path, help="private key (PEM) of --tls-cert")
    edge.add_argument("--nginx", help="the nginx binary (default: nginx on PATH, then /usr/sbin/nginx)")
    edge.add_argument("--dir", type=Path, help="where the configuration and nginx's files go (default: temp)")
    edge.add_argument("--print", action="store_true", help="print the nginx configuration and exit")
    edge.add_argument(
        "--insecure-open",
        action="store_true",
        help="listen on a non-loopback address in front of a server that does not authenticate, on purpose",
    )


def run_edge(args: argparse.Namespace) -> int:
    from nextbest.server.edge import Edge, EdgeConfig, render_config, server_authenticates
    from nextbest.server.tls import is_loopback

    config = EdgeConfig(
        listen=args.listen,
        upstream=args.upstream,
        max_concurrent=args.max_concurrent,
        workers=args.workers,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    for name in ("tls_cert", "tls_key"):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            print(f"nextbest edge: --{name.replace('_', '-')} {path}: no such file", file=sys.stderr)
            return 2
    if args.print:
        directory = args.dir or Path("/var/lib/nextbest-edge")
        sys.stdout.write(render_config(config, directory))
        return 0
    edge = Edge(config, args.dir, nginx=args.nginx)
    host = config.listen.rpartition(":")[0]
    # The server refuses a public address without authentication (`serve --insecure-open`); behind an
    # edge it listens on loopback, so the edge checks in its place that calls will need a token.
    if not is_loopback(host) and not args.insecure_open and not server_authenticates(config.upstream):
        print(
            f"nextbest edge: --listen {config.listen} is not loopback and the server at {config.upstream} "
            "does not authenticate callers: give it --tokens-file (see the README's 'Access control'), "
            "or pass --insecure-open to expose it anyway",
            file=sys.stderr,
        )
        return 2
    edge.start()
    assert edge.proc is not None
    print(
        f"nextbest edge on {config.listen} -> {config.upstream}: at most {config.max_concurrent} decision "
        f"calls at once (nginx {edge.nginx}, pid {edge.proc.pid}, configuration {edge.conf_path})",
        flush=True,
    )

    proc = edge.proc

    def _stop(_signum: int, _frame: Any) -> None:
        # Only ask nginx to finish its calls and exit (SIGQUIT): the main thread is in proc.wait(),
        # whose lock a second wait from this handler would wait on for ever.
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    code = proc.wait()
    edge.stop()
    # nginx stopped on our signal (SIGQUIT: graceful) is a clean exit; anything else is its own failure.
    return 0 if code in (0, -signal.SIGQUIT) else 1
