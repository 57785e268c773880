"""A campaign over a large audience on PostgreSQL, against NextActionBatch on the same database (issue 23).

Steps, in one run:

1. A fresh PostgreSQL database (``nb_campaign_<random>``, dropped at the end), migrated.
2. Customers: 500 template customers written the way the server writes them (``Store.record_events``:
   orders, consents, opens, at varied ages), then copied by ``COPY`` to ``--customers`` rows ``c0000000``,
   ``c0000001``, ... (the load is not measured). The template mix puts about 85 % of them in the
   audience (``customer.orders_count >= 1``).
3. ``nextbest campaign run bench`` as a subprocess (the bundled catalog, its models, plus the segment and
   the campaign on a trigger only the promotional email, SMS and on-site banner answer), killed with
   SIGKILL once half of the audience is decided (its progress line, polled), then run again with the same
   run id to the end. Each run's peak resident memory is its ``ru_maxrss`` (``os.wait4``), its
   decisions/s the new campaign decisions over its wall time; the campaign's figure is the audience over
   both runs' time.
4. Checks in SQL: no (campaign, run, customer) with two decisions, no customer with two campaign
   exposures, and the decisions equal the audience's eligible count (the templates' segment membership
   times their copies, and the count the run prints).
5. The baseline: ``--baseline`` more customers copied from the same templates (only the audience's,
   ids ``b0000000``, ...), ``nextbest serve`` on the same database (127.0.0.1, a free port), driven by
   NextActionBatch calls of 100 requests (the campaign's trigger, ``explain`` as the campaign asks, each
   customer once) from two client threads: decisions/s.

    .venv/bin/python benchmarks/bench_campaign.py --customers 100000
    .venv/bin/python benchmarks/bench_campaign.py --customers 1000000 --json benchmarks/results/campaign.json

The acceptance (issue 23): the campaign's peak RSS <= 500 MB, its decisions/s >= 0.8 x the baseline's,
no customer decided twice after the kill and re-run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from nextbest.campaigns import SegmentCount, segment_members
from nextbest.catalog import bundled_catalog_path, load_catalog
from nextbest.domain import Channel, Event, EventType
from nextbest.server.process import free_port, stop_process, wait_serving
from nextbest.store import Database, Store, upgrade
from nextbest.store.scan import customer_states

HOST = "127.0.0.1"
TEMPLATES = 500
CAMPAIGN = "bench"
RUN_ID = "bench1"
TRIGGER = "black_friday"  # answered by the bundled catalog's promotional actions, added below
BATCH = 100  # NextActionBatch requests per call, as issue 25's batch figure
RSS_LIMIT_MB = 500.0
RATIO_TARGET = 0.8

CAMPAIGN_YAML = """
segments:
  bench_buyers:
    description: Customers with at least one order (issue 23's benchmark).
    condition: customer.orders_count >= 1
campaigns:
  {campaign}:
    audience: bench_buyers
    trigger: {trigger}
    start: {start}
    stop: {stop}
"""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def fresh_database(url: str, keep: bool) -> Iterator[str]:
    """Creates nb_campaign_<random> next to ``url``'s database, yields its URL, drops it after."""
    base = make_url(url)
    name = f"nb_campaign_{secrets.token_hex(4)}"
    admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    _progress(f"[postgres] created database {name}")
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        if keep:
            _progress(f"[postgres] kept database {name}")
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            _progress(f"[postgres] dropped database {name}")


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def write_catalog(path: Path, now: datetime) -> Path:
    text = bundled_catalog_path().read_text()
    # The bundled promotions answer ``scheduled``, as lifecycle actions do; a campaign's trigger must be
    # answered by promotional actions only.
    head, promos = text.split("# --- promotional", 1)
    promos, tail = promos.split("\nexperiments:", 1)
    promos = promos.replace("scheduled]", f"scheduled, {TRIGGER}]")
    text = f"{head}# --- promotional{promos}\nexperiments:{tail}"
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    text += CAMPAIGN_YAML.format(
        campaign=CAMPAIGN,
        trigger=TRIGGER,
        start=(now - timedelta(hours=1)).strftime(fmt),
        stop=(now + timedelta(days=2)).strftime(fmt),
    )
    path.write_text(text)
    return path


def template_events(now: datetime, seed: int = 23) -> list[Event]:
    """Events for ``TEMPLATES`` customers ``t000``...: 0-4 orders, email consent for most, SMS and push
    for some, opens for the engaged; some lapsed (last order 100-300 days ago)."""
    rng = random.Random(seed)
    events: list[Event] = []
    for i in range(TEMPLATES):
        user = f"t{i:03d}"
        first = now - timedelta(days=rng.uniform(30, 700))
        events.append(Event(f"{user}-v", user, EventType.PRODUCT_VIEWED, first))
        orders = rng.choices(range(5), weights=(15, 40, 25, 12, 8))[0]
        lapsed = rng.random() < 0.3
        for k in range(orders):
            age = rng.uniform(100, 300) if lapsed else rng.uniform(1, 90)
            at = now - timedelta(days=age + k)
            events.append(
                Event(f"{user}-o{k}", user, EventType.ORDER_PLACED, at, value=round(rng.uniform(15, 250), 2))
            )
        for channel, share in ((Channel.EMAIL, 0.8), (Channel.SMS, 0.3), (Channel.PUSH, 0.4)):
            if rng.random() < share:
                events.append(
                    Event(
                        f"{user}-c-{channel.value}",
                        user,
                        EventType.CONSENT_CHANGED,
                        first,
                        channel=channel,
                        consent_granted=True,
                    )
                )
        if rng.random() < 0.7:
            for k in range(rng.randrange(1, 6)):
                at = now - timedelta(days=rng.uniform(1, 80), hours=k)
                events.append(Event(f"{user}-e{k}", user, EventType.OPENED, at, channel=Channel.EMAIL))
    events.sort(key=lambda e: e.occurred_at or now)
    return events


def load_templates(url: str, catalog_path: Path, now: datetime) -> list[bool]:
    """Writes the templates through the store; returns each template's audience membership, in
    template order."""
    db = Database(url)
    upgrade(db)
    store = Store(db)
    try:
        events = template_events(now)
        for start in range(0, len(events), 500):
            store.record_events(events[start : start + 500], now)
        segment = load_catalog(catalog_path).segments["bench_buyers"]
        members = {s.user_id for s in segment_members(segment, customer_states(db), now, SegmentCount(""))}
    finally:
        store.close()
    return [f"t{i:03d}" in members for i in range(TEMPLATES)]


def copy_customers(url: str, prefix: str, count: int, templates: list[int]) -> None:
    """``count`` customers ``<prefix>0000000``... by COPY, the i-th a copy of template
    ``templates[i % len(templates)]``'s row."""
    with psycopg.connect(_libpq(url)) as conn:
        buffer = io.BytesIO()
        with conn.cursor().copy(
            "COPY (SELECT * FROM customers WHERE user_id LIKE 't%' ORDER BY user_id) TO STDOUT"
        ) as out:
            for chunk in out:
                buffer.write(chunk)
        rows = buffer.getvalue().decode().splitlines()
        tails = [row.split("\t", 1)[1] for row in rows]
        assert len(tails) == TEMPLATES, len(tails)
        with conn.cursor().copy("COPY customers FROM STDIN") as into:
            lines: list[str] = []
            for i in range(count):
                lines.append(f"{prefix}{i:07d}\t{tails[templates[i % len(templates)]]}\n")
                if len(lines) == 10_000:
                    into.write("".join(lines))
                    lines.clear()
            if lines:
                into.write("".join(lines))
        conn.commit()
        conn.execute("ANALYZE customers")
        conn.commit()


def scalar(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(_libpq(url)) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


PREFIX = f"campaign:{CAMPAIGN}:{RUN_ID}:"


def campaign_decisions(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM decisions WHERE request_id LIKE %s", (PREFIX + "%",)))


def run_campaign_process(url: str, catalog: Path, log: Path, kill_at: int | None) -> dict[str, Any]:
    """``nextbest campaign run`` to the end, or SIGKILLed once ``kill_at`` campaign decisions exist."""
    command = [
        sys.executable,
        "-m",
        "nextbest",
        "campaign",
        "run",
        CAMPAIGN,
        "--catalog",
        str(catalog),
        "--database-url",
        url,
        "--run-id",
        RUN_ID,
    ]
    before = campaign_decisions(url)
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    killed = False
    if kill_at is not None:  # the progress line says how many are decided (a count in SQL would load it)
        while proc.poll() is None:
            time.sleep(1.0)
            decided = re.findall(rb"(\d+) decided", log.read_bytes()[-400:])
            if decided and before + int(decided[-1]) >= kill_at:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    after = campaign_decisions(url)
    output = log.read_text(errors="replace")
    cpu = usage.ru_utime + usage.ru_stime
    if not killed and proc.returncode != 0:
        raise RuntimeError(f"campaign run failed ({proc.returncode}):\n{output[-2000:]}")
    return {
        "killed": killed,
        "exit": proc.returncode,
        "seconds": round(elapsed, 1),
        "new_decisions": after - before,
        "decisions_per_s": round((after - before) / elapsed, 1),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(cpu, 1),
        "cpu_ms_per_new_decision": round(cpu / max(after - before, 1) * 1000, 3),
        "summary": output.rsplit("\r", 1)[-1].strip()[-600:],
    }


def duplicate_checks(url: str) -> dict[str, int]:
    """Decisions per (campaign, run, customer) and campaign exposures per customer, counted in SQL."""
    with psycopg.connect(_libpq(url)) as conn:
        twice = conn.execute(
            """SELECT count(*) FROM (
                 SELECT split_part(request_id, ':', 2), split_part(request_id, ':', 3), user_id
                 FROM decisions WHERE request_id LIKE 'campaign:%%'
                 GROUP BY 1, 2, 3 HAVING count(*) > 1) AS t"""
        ).fetchone()
        exposed_twice = conn.execute(
            """SELECT count(*) FROM (
                 SELECT e.user_id FROM exposures e JOIN decisions d USING (decision_id)
                 WHERE d.request_id LIKE 'campaign:%%'
                 GROUP BY e.user_id HAVING count(DISTINCT e.decision_id) > 1) AS t"""
        ).fetchone()
        total = conn.execute(
            "SELECT count(*), count(DISTINCT user_id) FROM decisions WHERE request_id LIKE %s",
            (PREFIX + "%",),
        ).fetchone()
    assert twice is not None and exposed_twice is not None and total is not None
    return {
        "customers_decided_twice": int(twice[0]),
        "customers_with_exposures_of_two_decisions": int(exposed_twice[0]),
        "campaign_decisions": int(total[0]),
        "distinct_customers": int(total[1]),
    }


def _process_cpu(pid: int) -> float:
    """A process's user + system CPU seconds so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def baseline(url: str, catalog: Path, users: list[str], log: Path, seconds: float) -> dict[str, Any]:
    """``nextbest serve`` on the database, NextActionBatch calls of ``BATCH`` from two threads, each
    customer once, for at most ``seconds``."""
    import grpc

    from nextbest.api.v1 import decision_service_pb2 as pb
    from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "nextbest",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--catalog",
        str(catalog),
        "--database-url",
        url,
        "--log-level",
        "WARNING",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"{HOST}:{port}", proc, log, timeout=120)
        batches = [users[i : i + BATCH] for i in range(0, len(users), BATCH)]
        errors: dict[str, int] = {}

        def drive(todo: list[list[str]], threads: int, deadline: float) -> int:
            lock = threading.Lock()
            answered = [0]

            def worker() -> None:
                with grpc.insecure_channel(f"{HOST}:{port}") as channel:
                    stub = pb_grpc.DecisionServiceStub(channel)
                    while True:
                        with lock:
                            if not todo or time.monotonic() > deadline:
                                return
                            batch = todo.pop()
                        requests = [
                            pb.NextActionRequest(
                                request_id=f"base:{uuid.uuid4().hex}",
                                user_id=u,
                                trigger=TRIGGER,
                                explain=True,
                            )
                            for u in batch
                        ]
                        response = stub.NextActionBatch(
                            pb.NextActionBatchRequest(requests=requests), timeout=60
                        )
                        with lock:
                            for r in response.results:
                                if r.HasField("response"):
                                    answered[0] += 1
                                else:
                                    errors[str(r.error.code)] = errors.get(str(r.error.code), 0) + 1

            pool = [threading.Thread(target=worker) for _ in range(threads)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            return answered[0]

        drive(batches[:5], 1, time.monotonic() + 120)  # warm-up: connections, compiled models, caches
        cpu = _process_cpu(proc.pid)
        started = time.monotonic()
        decided = drive(batches[5:], 2, started + seconds)
        cpu = _process_cpu(proc.pid) - cpu
        elapsed = time.monotonic() - started
    finally:
        stop_process(proc)
    return {
        "decisions": decided,
        "seconds": round(elapsed, 1),
        "decisions_per_s": round(decided / elapsed, 1),
        "server_cpu_s": round(cpu, 1),
        "server_cpu_ms_per_decision": round(cpu / decided * 1000, 3) if decided else None,
        "item_errors": errors,
    }


def judge(report: dict[str, Any], eligible: int) -> None:
    """Adds the ratios and the acceptance verdicts to ``report``."""
    ratio = report["campaign"]["decisions_per_s"] / report["baseline"]["decisions_per_s"]
    report["ratio"] = round(ratio, 3)
    # CPU per decision, steadier than wall time on a shared machine: the server's over the first run's
    # (the campaign process deciding without replays); each process's own CPU, PostgreSQL's not counted.
    first_ms = report["campaign"]["first_run"]["cpu_ms_per_new_decision"]
    server_ms = report["baseline"]["server_cpu_ms_per_decision"]
    report["cpu_per_decision_server_over_campaign"] = round(server_ms / first_ms, 3) if server_ms else None
    checks = report["checks"]
    report["acceptance"] = {
        "rss": report["campaign"]["max_rss_mb"] <= RSS_LIMIT_MB,
        "ratio": ratio >= RATIO_TARGET,
        "nobody_twice": checks["customers_decided_twice"] == 0
        and checks["customers_with_exposures_of_two_decisions"] == 0
        and checks["distinct_customers"] == checks["campaign_decisions"],
        "all_eligible_decided": checks["campaign_decisions"] == eligible == checks["audience_printed"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--customers", type=int, default=100_000, help="customers in the store (default 100,000)"
    )
    parser.add_argument(
        "--baseline", type=int, default=60_000, help="customers the NextActionBatch baseline decides for"
    )
    parser.add_argument("--baseline-seconds", type=float, default=90.0, help="most the baseline runs")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "NEXTBEST_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL URL; the benchmark creates its own database next to it and drops it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database (to look at it)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.customers < 1000:
        parser.error("--customers must be at least 1000")
    now = datetime.now(UTC)
    report: dict[str, Any] = {
        "date": now.strftime("%Y-%m-%d %H:%MZ"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "customers": args.customers,
    }
    with (
        tempfile.TemporaryDirectory(prefix="nb-campaign-") as tmp,
        fresh_database(args.postgres, args.keep) as url,
    ):
        work = Path(tmp)
        catalog = write_catalog(work / "catalog.yaml", now)
        t = time.monotonic()
        membership = load_templates(url, catalog, now)
        copy_customers(url, "c", args.customers, list(range(TEMPLATES)))
        # The copies' members, and the templates' own (they are customers too).
        eligible = sum(membership) * (args.customers // TEMPLATES + 1) + sum(
            membership[: args.customers % TEMPLATES]
        )
        report["eligible"] = eligible
        report["load_seconds"] = round(time.monotonic() - t, 1)
        _progress(
            f"[load] {args.customers} customers ({eligible} in the audience) in {report['load_seconds']} s"
        )

        first = run_campaign_process(url, catalog, work / "run1.log", kill_at=eligible // 2)
        _progress(f"[campaign] first run: {first}")
        second = run_campaign_process(url, catalog, work / "run2.log", kill_at=None)
        _progress(f"[campaign] re-run: {second}")
        checks = duplicate_checks(url)
        printed = re.search(r": (\d+) in bench_buyers of (\d+) customers", second["summary"])
        checks["audience_printed"] = int(printed.group(1)) if printed else -1
        _progress(f"[check] {checks}")
        seconds = first["seconds"] + second["seconds"]
        report["campaign"] = {
            "first_run": first,
            "re_run": second,
            "decisions_per_s": round(checks["campaign_decisions"] / seconds, 1),
            "max_rss_mb": max(first["max_rss_mb"], second["max_rss_mb"]),
        }
        report["checks"] = checks

        members = [i for i in range(TEMPLATES) if membership[i]]
        copy_customers(url, "b", args.baseline, members)
        users = [f"b{i:07d}" for i in range(args.baseline)]
        base = baseline(url, catalog, users, work / "serve.log", args.baseline_seconds)
        _progress(f"[baseline] {base}")
        report["baseline"] = base
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    judge(report, eligible)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(report["acceptance"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
