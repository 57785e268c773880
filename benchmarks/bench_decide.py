"""The decision pipeline in process against the empty gRPC server's CPU per call, in one run (issue 25).

``DecisionEngine.decide`` on ``catalog_20.yaml`` (20 candidate actions for ``bench_trigger``) with the
bundled models scored as the server scores them (compiled trees; ``--lightgbm``: LightGBM's predict), the
same requests ``loadgen.py`` sends (cart value, two products, Europe/Paris, 10,000 customers), against
``FrozenStore`` (each customer read once, nothing written: the pipeline alone, as in ``memory_server.py``).
Its process CPU per decision is compared with the CPU per call of ``empty_server.py`` (gRPC and protobuf
with no logic: the floor), measured by ``loadgen.py`` closed loop in the same run; the two alternate over
``--rounds`` so that a noisy neighbour hits both. The target is decide <= 0.5 x the empty server's CPU
per call.

Then a breakdown per stage: each stage run alone, in process, on the inputs the pipeline gave it, CPU per
decision (the stages' sum is a little less than ``decide``: locks, clocks, the deadline estimates).

As the server does before serving (``nextbest serve``), what start-up built is frozen out of the
garbage collector (``gc.freeze()``) once the engine is warm: full collections then walk only what the
decisions made, not the catalog, the models and the 10,000 snapshots.

With ``--base REV``, each round also times ``decide`` of commit ``REV`` (``git archive`` of its ``src``)
in a child process, and of this tree in another, alternating, on the same requests: old against new in
one run, whatever the machine is doing meanwhile.

    python benchmarks/bench_decide.py [--rounds 3] [--decisions 3000] [--seconds 5] [--base REV] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from nextbest.catalog import load_catalog
from nextbest.decision.contact import ContactLog, preemptions
from nextbest.decision.engine import (
    DecisionEngine,
    _chosen,
    _without_explanations,
    new_decision_id,
    request_fingerprint,
)
from nextbest.decision.experiments import apply_experiments
from nextbest.decision.scoring import score_candidates
from nextbest.decision.validate import validate_request
from nextbest.domain import DecisionRequest, RequestContext
from nextbest.models.artifacts import bundled_models_path
from nextbest.models.compiled import ForestCompiler
from nextbest.models.registry import ModelRegistry
from nextbest.settings import Settings
from nextbest.store import FrozenStore, MemoryStore

HERE = Path(__file__).resolve().parent
NOW = datetime(2026, 11, 23, 15, tzinfo=UTC)
TRIGGER = "bench_trigger"
USERS = 10_000


def requests(count: int, seed: int, users: int = USERS) -> list[DecisionRequest]:
    """What loadgen.py sends, as domain requests."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        products = rng.sample(range(1000), 2)
        out.append(
            DecisionRequest(
                request_id=f"bench-{seed}-{i}",
                user_id=f"bench-user-{rng.randrange(users):05d}",
                trigger=TRIGGER,
                occurred_at=None,
                context=RequestContext(
                    cart_value=round(rng.uniform(5.0, 250.0), 2),
                    product_ids=tuple(f"sku-{p:05d}" for p in products),
                    time_zone="Europe/Paris",
                ),
            )
        )
    return out


def engine(catalog_path: Path, compiled: bool = True, models_dir: Path | None = None) -> DecisionEngine:
    """The engine as the server builds it: compiled trees (waited for, from the cache or compiled now)
    unless ``compiled`` is False or nothing can be compiled here, then LightGBM's own predict."""
    catalog = load_catalog(catalog_path)
    compiler = ForestCompiler(Settings().model_cache_dir) if compiled else None
    models = ModelRegistry(models_dir or bundled_models_path(), compiler)
    if compiler is not None:
        if compiler.unavailable:
            print(f"compiled trees unavailable ({compiler.unavailable}): LightGBM scores", file=sys.stderr)
        elif not compiler.wait(900):
            print("compiled trees not ready after 15 minutes: LightGBM scores", file=sys.stderr)
    return DecisionEngine(catalog, FrozenStore(MemoryStore().load_snapshot), clock=lambda: NOW, models=models)


def warm_engine(
    catalog_path: Path, compiled: bool = True, freeze: bool = True, models_dir: Path | None = None
) -> DecisionEngine:
    """The engine with every customer read once (``FrozenStore`` answers from memory from then on),
    plans built, models loaded, caches warm, and what start-up built frozen out of the collector as
    the server freezes it before serving."""
    eng = engine(catalog_path, compiled=compiled, models_dir=models_dir)
    for user in range(USERS):
        eng.store.load_snapshot(f"bench-user-{user:05d}", NOW, ())
    for r in requests(1000, seed=1):
        eng.decide(r)
    if freeze:
        gc.collect()
        gc.freeze()
    return eng


def child_decide(
    src: Path, catalog: Path, decisions: int, seed: int, *, lightgbm: bool, models_dir: Path | None
) -> float:
    """CPU µs per decide of the tree at ``src`` (its ``nextbest``), timed by this script in a child."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--catalog", str(catalog)]
    cmd += ["--decisions", str(decisions), "--seed", str(seed)] + (["--lightgbm"] if lightgbm else [])
    # The same models for both trees (a tree from git archive has no models/ of its own).
    cmd += ["--models", str(models_dir or bundled_models_path())]
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, timeout=1800)
    return float(done.stdout.strip().splitlines()[-1])


class GcClock:
    """CPU time spent in the garbage collector while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started


def cpu_per_call(fn: Callable[[DecisionRequest], Any], batch: list[DecisionRequest]) -> float:
    started = time.process_time()
    for r in batch:
        fn(r)
    return (time.process_time() - started) / len(batch) * 1e6


def stage_breakdown(eng: DecisionEngine, batch: list[DecisionRequest]) -> dict[str, float]:
    """CPU µs per decision of each stage, run alone on the inputs the pipeline gives it."""
    catalog, models = eng.catalog, (eng.models.current if eng.models else None)
    assert models is not None
    snaps = {r.request_id: eng.store.load_snapshot(r.user_id, NOW, ()) for r in batch}
    plan = eng._plans.plan(TRIGGER, ())
    zone = catalog.policy.time_zone
    eligible = {r.request_id: eng._eligible(plan, snaps[r.request_id], r, NOW)[0] for r in batch}
    treated = {
        r.request_id: apply_experiments(
            eligible[r.request_id], catalog, snaps[r.request_id].state, TRIGGER, NOW
        )
        for r in batch
    }
    scored = {
        r.request_id: score_candidates(
            treated[r.request_id], NOW, snapshot=snaps[r.request_id], request=r, zone=zone, models=models
        )[0]
        for r in batch
    }

    def arbitrate(r: DecisionRequest) -> Any:
        contact = ContactLog(catalog.policy, snaps[r.request_id].history, NOW, zone)
        return eng._arbitrate(scored[r.request_id], 1, contact)

    decisions = {r.request_id: eng._make_decision(r, snaps[r.request_id], NOW) for r in batch}
    prints = {r.request_id: request_fingerprint(r) for r in batch}
    return {
        "validate": cpu_per_call(lambda r: validate_request(r, catalog), batch),
        "fingerprint": cpu_per_call(request_fingerprint, batch),
        "eligibility (gates, contact, rules)": cpu_per_call(
            lambda r: eng._eligible(plan, snaps[r.request_id], r, NOW),
            batch,
        ),
        "experiments": cpu_per_call(
            lambda r: apply_experiments(
                eligible[r.request_id], catalog, snaps[r.request_id].state, TRIGGER, NOW
            ),
            batch,
        ),
        "scoring": cpu_per_call(
            lambda r: score_candidates(
                treated[r.request_id], NOW, snapshot=snaps[r.request_id], request=r, zone=zone, models=models
            ),
            batch,
        ),
        "arbitration and send time": cpu_per_call(arbitrate, batch),
        "make_decision (all of the above but validate, fingerprint)": cpu_per_call(
            lambda r: eng._make_decision(r, snaps[r.request_id], NOW),
            batch,
        ),
        "  of which the decision id": cpu_per_call(lambda r: new_decision_id(), batch),
        "snapshot read (FrozenStore)": cpu_per_call(lambda r: eng._load(r, NOW), batch),
        "save (FrozenStore: nothing written)": cpu_per_call(
            lambda r: eng.store.save_decision(
                decisions[r.request_id], prints[r.request_id], NOW, snaps[r.request_id].version
            ),
            batch,
        ),
        "the answer without explain": cpu_per_call(
            lambda r: _without_explanations(decisions[r.request_id], bool(catalog.experiments)), batch
        ),
    }


def in_pipeline(eng: DecisionEngine, batch: list[DecisionRequest]) -> dict[str, float]:
    """µs per decision of each stage inside the pipeline: the steps of ``DecisionEngine._make_decision``
    (as at this commit) run in its order, one request after another, each timed by ``perf_counter``
    (~0.1 µs per reading included). Run alone, a stage keeps its code and data in the caches between
    calls; here it pays what the other stages evicted, as in ``decide``."""
    catalog = eng.catalog
    models = eng.models.current if eng.models else None
    assert models is not None
    snaps = [eng.store.load_snapshot(r.user_id, NOW, ()) for r in batch]
    spent: dict[str, float] = {}
    clock = time.perf_counter

    def add(name: str, seconds: float) -> None:
        spent[name] = spent.get(name, 0.0) + seconds

    for r, snap in zip(batch, snaps, strict=True):
        t0 = clock()
        validate_request(r, catalog)
        t1 = clock()
        request_fingerprint(r)
        t2 = clock()
        plan = eng._plans.plan(r.trigger, r.channels)
        eligible, rejected = eng._eligible(plan, snap, r, NOW)
        t3 = clock()
        treated = apply_experiments(eligible, catalog, snap.state, r.trigger, NOW)
        t4 = clock()
        zone = ZoneInfo(r.context.time_zone) if r.context.time_zone else catalog.policy.time_zone
        scored, no_lift = score_candidates(treated, NOW, snapshot=snap, request=r, zone=zone, models=models)
        t5 = clock()
        contact = ContactLog(catalog.policy, snap.history, NOW, zone)
        chosen, lower, _held = eng._arbitrate(scored, r.max_actions or 1, contact)
        t6 = clock()
        decision_id = new_decision_id()
        preemptions(chosen, contact, catalog.flows, decision_id)
        tuple(_chosen(c) for c in chosen)
        tuple(rejected + no_lift + lower)
        t7 = clock()
        for name, seconds in (
            ("validate", t1 - t0),
            ("fingerprint", t2 - t1),
            ("eligibility (plan, gates, contact, rules)", t3 - t2),
            ("experiments", t4 - t3),
            ("scoring", t5 - t4),
            ("arbitration and send time", t6 - t5),
            ("decision id, preemptions, the winner's features", t7 - t6),
        ):
            add(name, seconds)
    return {name: seconds / len(batch) * 1e6 for name, seconds in spent.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"empty server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("empty server did not start")


def empty_server_cpu(seconds: float, concurrency: int) -> float:
    """Server CPU µs per call of empty_server.py under loadgen.py closed loop."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, str(HERE / "empty_server.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, server)
        cmd = [sys.executable, str(HERE / "loadgen.py"), "--port", str(port), "--server-pid", str(server.pid)]
        cmd += ["--duration", str(seconds), "--warmup", "1", "--trigger", TRIGGER, "closed"]
        cmd += ["--concurrency", str(concurrency)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=True)
        value = json.loads(done.stdout)["server_cpu_us_per_call"]
        return float(value)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True, cwd=HERE
        )
        return out.stdout.strip() or None
    except OSError:
        return None


def rounds(
    eng: DecisionEngine, args: argparse.Namespace
) -> tuple[list[float], list[float], dict[str, list[float]], float]:
    """Per round: decide's CPU per call, the empty server's, and with ``--base`` both trees' in child
    processes; and the garbage collector's CPU over all of decide's rounds."""
    decide_us: list[float] = []
    floor_us: list[float] = []
    children: dict[str, list[float]] = {}
    gc_clock = GcClock()
    with tempfile.TemporaryDirectory() as tmp:
        trees: dict[str, Path] = {}
        if args.base:
            archive = subprocess.run(
                ["git", "archive", args.base, "src"], cwd=HERE.parent, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            trees = {args.base: Path(tmp) / "src", "this tree": HERE.parent / "src"}
        for round_no in range(args.rounds):
            batch = requests(args.decisions, seed=100 + round_no)
            gc.callbacks.append(gc_clock)
            decide_us.append(cpu_per_call(eng.decide, batch))
            gc.callbacks.remove(gc_clock)
            if not args.no_server:
                floor_us.append(empty_server_cpu(args.seconds, args.concurrency))
            for name, src in trees.items():
                us = child_decide(
                    src,
                    args.catalog,
                    args.decisions,
                    100 + round_no,
                    lightgbm=args.lightgbm,
                    models_dir=args.models,
                )
                children.setdefault(name, []).append(us)
            print(
                f"round {round_no + 1}: decide {decide_us[-1]:.0f} µs"
                + (f", empty server {floor_us[-1]:.0f} µs per call" if floor_us else "")
                + "".join(f", {name} (child) {v[-1]:.0f} µs" for name, v in children.items()),
                file=sys.stderr,
            )
    return decide_us, floor_us, children, gc_clock.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=HERE / "catalog_20.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decisions", type=int, default=3000, help="decisions per round")
    parser.add_argument("--seconds", type=float, default=5.0, help="empty-server load per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-server", action="store_true", help="the pipeline alone, no floor")
    parser.add_argument("--lightgbm", action="store_true", help="LightGBM's predict, not compiled trees")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--models", type=Path, help="a models/ directory (default: this checkout's)")
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="leave start-up objects to the collector, as runs of this script before --base existed did",
    )
    parser.add_argument("--base", help="also time decide of this commit, in child processes (both trees)")
    parser.add_argument("--seed", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    eng = warm_engine(
        args.catalog, compiled=not args.lightgbm, freeze=not args.no_freeze, models_dir=args.models
    )
    if args.child:
        print(cpu_per_call(eng.decide, requests(args.decisions, seed=args.seed)))
        return 0
    decide_us, floor_us, children, gc_seconds = rounds(eng, args)
    stages = stage_breakdown(eng, requests(args.decisions, seed=7))
    pipeline = in_pipeline(eng, requests(args.decisions, seed=8))
    decide = statistics.median(decide_us)
    floor = statistics.median(floor_us) if floor_us else None
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": _commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "catalog": args.catalog.name,
        "scoring": "LightGBM" if args.lightgbm else "compiled trees when available",
        "models": sorted(eng.models.current.versions.values()) if eng.models else None,
        "decide_cpu_us": round(decide, 1),
        "decide_cpu_us_rounds": [round(v, 1) for v in decide_us],
        "empty_server_cpu_us_per_call": None if floor is None else round(floor, 1),
        "empty_server_rounds": [round(v, 1) for v in floor_us],
        "ratio": None if floor is None else round(decide / floor, 3),
        "target_ratio": 0.5,
        "gc_cpu_us_per_decide": round(gc_seconds / (args.rounds * args.decisions) * 1e6, 2),
        "stages_cpu_us": {k: round(v, 1) for k, v in stages.items()},
        "stages_in_pipeline_us": {k: round(v, 1) for k, v in pipeline.items()},
        "children_cpu_us_rounds": {k: [round(x, 1) for x in v] for k, v in children.items()},
    }
    print(f"decide: {decide:.0f} µs CPU per decision (median of {args.rounds} rounds)")
    if floor is not None:
        verdict = "met" if decide / floor <= 0.5 else "NOT met"
        print(
            f"empty gRPC server: {floor:.0f} µs CPU per call; "
            f"decide / empty = {decide / floor:.2f} ({verdict})"
        )
    print(f"of which the garbage collector: {report['gc_cpu_us_per_decide']:.1f} µs per decide")
    for name, values in children.items():
        print(f"{name} in a child process: {statistics.median(values):.0f} µs per decide (median)")
    if args.base and len(children) == 2:
        ratio = statistics.median(children["this tree"]) / statistics.median(children[args.base])
        print(f"this tree / {args.base}: {ratio:.3f}")
    for name, value in stages.items():
        print(f"  {name:60s} {value:7.1f} µs")
    print("in the pipeline (perf_counter around each step of _make_decision, one request after another):")
    for name, value in pipeline.items():
        print(f"  {name:60s} {value:7.1f} µs")
    print(f"  {'sum':60s} {sum(pipeline.values()):7.1f} µs")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
