"""``nextbest serve`` with every garbage collection timed: is the collector behind a latency tail?

Runs the server as ``nextbest serve`` runs it (same arguments), with a ``gc.callbacks`` hook that prints to
stderr each collection longer than ``GC_SERVE_REPORT_MS`` (default 3 ms) with its wall time and
generation, and every 10 s a summary per generation (count, longest, total ms). Put the load on it with
``loadgen.py`` and compare the printed times with the load's window.

    python benchmarks/gc_serve.py serve --port 50158 --catalog benchmarks/catalog_20.yaml \
        --database-url sqlite:////tmp/gc.db --migrate 2> gc.log
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from typing import Any

REPORT_MS = float(os.environ.get("GC_SERVE_REPORT_MS", "3"))
_started = [0.0]
_pauses: dict[int, list[float]] = {}


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _started[0]) * 1e3
    _pauses.setdefault(info["generation"], []).append(ms)
    if ms > REPORT_MS:
        line = f"gc generation {info['generation']}: {ms:.1f} ms, {info['collected']} collected"
        print(f"{time.time():.3f} {line}", file=sys.stderr, flush=True)


def _summaries() -> None:
    while True:
        time.sleep(10)
        summary = {g: (len(v), round(max(v), 1), round(sum(v), 1)) for g, v in sorted(_pauses.items())}
        line = f"gc so far (count, longest ms, total ms): {summary}"
        print(f"{time.time():.3f} {line}", file=sys.stderr, flush=True)


def main() -> int:
    gc.callbacks.append(_timed)
    threading.Thread(target=_summaries, name="gc-summaries", daemon=True).start()
    from nextbest.cli import main as nextbest

    return nextbest(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
