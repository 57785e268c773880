"""A nextbest server in a child process, for tools that drive one over loopback (the simulator, the
demo): the server gets its own interpreter and core instead of sharing the caller's."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from nextbest.client import NextbestClient

__all__ = ["free_port", "server_process"]

HOST = "127.0.0.1"


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
        deadline = time.monotonic() + timeout
        with NextbestClient(address, max_attempts=1) as client:
            while not client.is_serving(timeout=1.0):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"nextbest serve exited with code {proc.returncode}:\n{_tail(log_path)}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nextbest serve not SERVING after {timeout:.0f}s:\n{_tail(log_path)}")
                time.sleep(0.1)
        yield address
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
