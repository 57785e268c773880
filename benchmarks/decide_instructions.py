"""Instructions per ``decide``, counted by valgrind's callgrind: repeatable on a shared, noisy machine.

For each tree (this checkout, and with ``--base REV`` a commit checked out with ``git archive`` into a
temporary folder, run with the same venv), a child process builds ``DecisionEngine`` on
``catalog_20.yaml`` with this checkout's ``models/`` (both trees the same models; LightGBM's own predict:
no compiled trees, which would need a C compiler under valgrind) and ``FrozenStore``, makes 100 warm-up
decisions, then N more. It runs twice under callgrind, with N = 0 and N = ``--decisions``; the difference
over N is the instructions one decision costs, imports and set-up cancelling out. Slow (valgrind runs
~50 x slower; a few minutes per tree), but the counts do not depend on what else the machine is doing
(``PYTHONHASHSEED`` is fixed: a random one moves them by up to ~2.5 %).

    python benchmarks/decide_instructions.py [--base REV] [--head REV] [--decisions 500] [--models DIR]

``--head REV`` counts a commit instead of this checkout's working tree (which others may be editing while
valgrind runs for minutes).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import random, sys
from datetime import UTC, datetime
from pathlib import Path
from nextbest.catalog import load_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import DecisionRequest, RequestContext
from nextbest.models.registry import ModelRegistry
from nextbest.store import FrozenStore, MemoryStore

NOW = datetime(2026, 11, 23, 15, tzinfo=UTC)
rng = random.Random(1)
catalog = load_catalog(Path(sys.argv[2]))
models = ModelRegistry(Path(sys.argv[3]))
engine = DecisionEngine(catalog, FrozenStore(MemoryStore().load_snapshot), clock=lambda: NOW, models=models)
print("MODELS", sorted(models.current.versions.items()))
def request(i):
    return DecisionRequest(request_id=f"r{i}", user_id=f"bench-user-{rng.randrange(10000):05d}",
        trigger="bench_trigger", occurred_at=None,
        context=RequestContext(cart_value=round(rng.uniform(5, 250), 2),
            product_ids=tuple(f"sku-{rng.randrange(1000):05d}" for _ in range(2)), time_zone="Europe/Paris"))
requests = [request(i) for i in range(100 + int(sys.argv[1]))]
for r in requests:
    engine.decide(r)
"""


def instructions(src: Path, decisions: int, workdir: Path, models: list[str], models_dir: Path) -> int:
    """Instructions of the child's whole run; ``models`` gets the model versions it loaded."""
    child = workdir / "child.py"
    child.write_text(CHILD)
    out = workdir / "callgrind.out"
    catalog = ROOT / "benchmarks" / "catalog_20.yaml"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, str(child)]
    done = subprocess.run(
        [*command, str(decisions), str(catalog), str(models_dir)],
        # A fixed hash seed: with a random one the same code counts up to ~2.5 % apart between runs (set
        # and dict layouts, string hashes).
        env={**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    models.extend(line for line in done.stdout.splitlines() if line.startswith("MODELS"))
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_decision(src: Path, decisions: int, models_dir: Path) -> tuple[float, str]:
    """Instructions per decision, and the models the tree loaded (the same for both trees, or the
    comparison is not of the pipeline alone)."""
    models: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = instructions(src, 0, Path(tmp), models, models_dir)
        total = instructions(src, decisions, Path(tmp), models, models_dir)
    return (total - base) / decisions, models[0] if models else "MODELS ?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--base", help="a commit to compare with (checked out with git archive)")
    parser.add_argument("--head", help="a commit to count instead of this checkout's working tree")
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument(
        "--models",
        type=Path,
        default=ROOT / "models",
        help="the models both trees load (default: this checkout's models/, which others may retrain "
        "while valgrind runs; a folder of its own keeps the comparison on one set)",
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("decide_instructions: valgrind is not installed", file=sys.stderr)
        return 2
    results: dict[str, tuple[float, str]] = {}
    if args.base:
        results[args.base] = _at_commit(args.base, args.decisions, args.models)
    head = args.head or "this checkout"
    results[head] = (
        _at_commit(args.head, args.decisions, args.models)
        if args.head
        else per_decision(ROOT / "src", args.decisions, args.models)
    )
    for name, (value, models) in results.items():
        print(f"{name}: {value:,.0f} instructions per decide ({models})")
    if args.base:
        ratio = results[head][0] / results[args.base][0]
        print(f"{head} / {args.base} = {ratio:.3f}")
        if results[head][1] != results[args.base][1]:
            print("the two trees loaded different models: not a comparison of the pipeline alone")
    return 0


def _at_commit(rev: str, decisions: int, models_dir: Path) -> tuple[float, str]:
    """``per_decision`` on the ``src`` of commit ``rev`` (checked out with git archive)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        return per_decision(Path(tmp) / "src", decisions, models_dir)


if __name__ == "__main__":
    raise SystemExit(main())
