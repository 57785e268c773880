"""`nextbest serve --processes N`: several processes share one port and shut down on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nextbest.client import NextbestClient
from nextbest.server.process import free_port
from tests.conftest import uid

# Each test starts `nextbest serve` processes.
pytestmark = pytest.mark.slow


def test_several_processes_serve_one_port(tmp_path: Path) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "nextbest",
        "serve",
        "--port",
        str(port),
        "--processes",
        "2",
        "--database-url",
        f"sqlite:///{tmp_path}/p.db",
        "--log-level",
        "WARNING",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        answered = set()
        for _ in range(8):  # one connection each, so the kernel spreads them over the processes
            with NextbestClient(f"127.0.0.1:{port}", timeout=10.0) as client:
                client.wait_until_serving(timeout=30.0)
                reply = client.next_action(uid(), "order_placed", channels=["email"])
                answered.add(reply.actions[0].action_id)
        assert answered == {"order_confirmation_email"}
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_processes_need_a_fixed_port() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nextbest", "serve", "--port", "0", "--processes", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0 and "--processes needs a fixed --port" in done.stderr
