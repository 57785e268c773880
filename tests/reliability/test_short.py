"""The fault harness's short run (benchmarks/reliability.py --short) on SQLite: its self-test must catch a
server that acknowledges before it commits, and the real server must lose, duplicate and invent nothing
through SIGKILLs and a SIGTERM under load. ``make reliability`` runs the full set of faults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "reliability.py"


@pytest.mark.slow
def test_the_ledger_stays_clean_and_the_self_test_catches_ack_before_commit(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(HARNESS), "--short", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.exists(), done.stderr[-3000:]
    results = {r["scenario"].split(" ")[0]: r for r in json.loads(out.read_text())}
    selftest, kills = results["selftest"], results["2"]
    assert selftest["lost"] > 0, "the self-test did not catch a server that acknowledges before committing"
    assert kills["acknowledged"] > 0 and kills["unresolved"] == 0
    assert (kills["lost"], kills["duplicates"], kills["phantoms"]) == (0, 0, 0), kills["examples"]
    assert kills["sigterm_exit_code"] == 0
    assert done.returncode == 0, done.stderr[-3000:]
