"""A nextbest server in a child process, for tools that drive one over loopback (the simulator, the
demo): the server gets its own interpreter and core instead of sharing the caller's."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nextbest.client import NextbestClient

__all__ = ["free_port", "server_process", "stop_process", "supervise", "wait_serving"]

HOST = "127.0.0.1"
logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def server_process(args: Sequence[str], log_path: Path, timeout: float = 60.0) -> Iterator[str]:
    """Runs ``nextbest serve ARGS --port P`` until the block ends; yields its address once SERVING.
    The server's log goes to ``log_path``; a server that dies at start raises with its last lines."""
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "nextbest", "serve", *args, "--host", HOST, "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
    address = f"{HOST}:{port}"
    try:
        wait_serving(address, proc, log_path, timeout)
        yield address
    finally:
        stop_process(proc)


def wait_serving(address: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    """Polls the grpc.health.v1 status of the server ``proc`` runs at ``address`` until it is SERVING;
    raises RuntimeError with the last lines of its log if the process exits or ``timeout`` passes.
    It speaks plaintext: for a server with TLS, give the address of its ``--health-port``."""
    deadline = time.monotonic() + timeout
    with NextbestClient(address, max_attempts=1) as client:
        while not client.is_serving(timeout=1.0):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not SERVING after {timeout:.0f}s:\n{_tail(log_path)}")
            time.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM (a server stops gracefully on it), then SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def supervise(target: Callable[..., None], args_per_process: Sequence[tuple[Any, ...]]) -> int:
    """Runs ``target(*args)`` in one spawned process per entry (no gRPC state may cross a fork), passes
    SIGTERM and SIGINT on to them as SIGTERM and SIGHUP (reload) as SIGHUP, waits for all and returns the
    worst exit code. This is how
    several servers share a port (``nextbest serve --processes N``)."""
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=target, args=args, name=f"nextbest-{index}")
        for index, args in enumerate(args_per_process)
    ]
    for child in children:
        child.start()

    def _shutdown(signum: int, _frame: Any) -> None:
        logger.info("signal %d: stopping %d processes", signum, len(children))
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    def _reload(signum: int, _frame: Any) -> None:
        # SIGHUP would end this supervisor (its default action); each server reloads on it instead.
        logger.info("signal %d: passing it on to %d processes", signum, len(children))
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    signal.signal(signal.SIGHUP, _reload)
    for child in children:
        child.join()
    return max((child.exitcode or 0 for child in children), default=0)
