"""The campaign run path at scale, on SQLite and PostgreSQL: a run started again finds what it already
decided in one read per batch and decides only the rest; a ``nextbest campaign run`` process killed
with SIGKILL in the middle of a batch's group commit, then run again, decides every member exactly once.
The speed and memory of a large run are measured in benchmarks/bench_campaign.py, not here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from nextbest.campaigns import run_campaign
from nextbest.campaigns.resume import SPLIT_AT
from nextbest.catalog import parse_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import Channel, Decision, DecisionRequest, Event, EventType
from nextbest.errors import NextbestError
from nextbest.store import Database, MemoryStore, Store, upgrade
from nextbest.store.pseudonyms import CustomerIds
from nextbest.store.scan import customer_states
from nextbest.store.schema import decisions
from tests.campaigns.test_campaigns import CATALOG
from tests.conftest import BACKENDS, PG_URL

NOW = datetime(2026, 11, 23, 10, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own (a campaign scans every stored customer), migrated."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/run.db"
        admin = None
    else:
        name = f"nextbest_run_{uuid.uuid4().hex[:10]}"
        admin = create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    upgrade(db)
    db.dispose()
    yield url
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _customers(store: Store, users: int, at: datetime) -> list[str]:
    """``users`` buyers with email consent, ``c0000``..., and one customer outside the segment."""
    ids = [f"c{i:04d}" for i in range(users)]
    events = [Event(f"{u}-o", u, EventType.ORDER_PLACED, at, value=30.0) for u in ids]
    events += [
        Event(f"{u}-c", u, EventType.CONSENT_CHANGED, at, channel=Channel.EMAIL, consent_granted=True)
        for u in ids
    ]
    events.append(Event("browser-v", "browser", EventType.PRODUCT_VIEWED, at))
    for start in range(0, len(events), 500):
        store.record_events(events[start : start + 500], at)
    return ids


def _per_customer(db: Database, prefix: str) -> tuple[int, int]:
    """The run's decisions, and how many customers have more than one."""
    with db.reader.connect() as conn:
        total = conn.execute(
            select(func.count()).select_from(decisions).where(decisions.c.request_id.like(f"{prefix}%"))
        ).scalar_one()
        twice = conn.execute(
            select(func.count()).select_from(
                select(decisions.c.user_id)
                .where(decisions.c.request_id.like(f"{prefix}%"))
                .group_by(decisions.c.user_id)
                .having(func.count() > 1)
                .subquery()
            )
        ).scalar_one()
    return int(total), int(twice)


class _Counting(DecisionEngine):
    """Records the request ids ``decide_batch`` is asked to decide (from any thread)."""

    asked: list[str]
    _asking = threading.Lock()

    def decide_batch(
        self, requests: Sequence[DecisionRequest], deadline: float | None = None
    ) -> list[Decision | NextbestError]:
        with self._asking:
            self.asked += [r.request_id for r in requests]
        return super().decide_batch(requests, deadline)


class KilledError(Exception):
    """The crash a progress callback plays after a run's first batch."""


def kill(run: object) -> None:
    raise KilledError


def test_a_rerun_replays_what_it_decided_without_deciding_it_again(fresh_url: str) -> None:
    catalog = parse_catalog(CATALOG.replace("BUDGET", ""), "c.yaml")
    store = Store(Database(fresh_url))
    users = _customers(store, 10, NOW - timedelta(days=20))
    engine = _Counting(catalog, store, clock=lambda: NOW)
    engine.asked = []
    campaign = catalog.campaigns["autumn"]

    with pytest.raises(KilledError):
        run_campaign(
            engine, campaign, customer_states(store.db, page=4), "r", NOW, batch_size=3, progress=kill
        )
    first = list(engine.asked)
    assert first == [f"campaign:autumn:r:{u}" for u in users[:3]]
    engine.asked = []
    done = run_campaign(engine, campaign, customer_states(store.db, page=4), "r", NOW, batch_size=3)
    assert (done.decided, done.replayed, done.sent, sum(done.failed.values())) == (10, 3, 10, 0)
    assert engine.asked == [f"campaign:autumn:r:{u}" for u in users[3:]]  # the first 3 were not redone
    assert _per_customer(store.db, "campaign:autumn:r:") == (10, 0)
    # A third run replays everyone from one read per batch: nothing is decided.
    engine.asked = []
    again = run_campaign(engine, campaign, customer_states(store.db), "r", NOW, batch_size=500)
    assert (again.decided, again.replayed, again.sent, engine.asked) == (10, 10, 10, [])
    store.close()


def test_a_large_batch_is_decided_in_parts_at_once_and_resumes_alike(fresh_url: str) -> None:
    catalog = parse_catalog(CATALOG.replace("BUDGET", ""), "c.yaml")
    store = Store(Database(fresh_url))
    users = _customers(store, 2 * SPLIT_AT + 50, NOW - timedelta(days=20))
    engine = _Counting(catalog, store, clock=lambda: NOW)
    engine.asked = []
    campaign = catalog.campaigns["autumn"]

    size = 2 * SPLIT_AT
    with pytest.raises(KilledError):
        run_campaign(engine, campaign, customer_states(store.db), "h", NOW, batch_size=size, progress=kill)
    assert sorted(engine.asked) == [f"campaign:autumn:h:{u}" for u in users[:size]]
    assert len(engine.asked) == size  # in parts, nothing asked twice
    engine.asked = []
    done = run_campaign(engine, campaign, customer_states(store.db), "h", NOW, batch_size=size)
    assert (done.decided, done.replayed, done.sent) == (len(users), size, len(users))
    assert sorted(engine.asked) == [f"campaign:autumn:h:{u}" for u in users[size:]]
    assert _per_customer(store.db, "campaign:autumn:h:") == (len(users), 0)
    store.close()


def test_a_run_id_reused_for_a_different_request_fails_those_members(fresh_url: str) -> None:
    text_ = CATALOG.replace("BUDGET", "").replace("[campaign_autumn]", "[campaign_autumn, campaign_winter]")
    catalog = parse_catalog(text_, "c.yaml")
    store = Store(Database(fresh_url))
    _customers(store, 4, NOW - timedelta(days=20))
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    run_campaign(engine, catalog.campaigns["autumn"], customer_states(store.db), "w", NOW)
    # The same campaign and run id asking another trigger: its members' request ids are taken by
    # different requests, refused as decide_batch refuses them, nothing decided twice.
    winter = parse_catalog(text_.replace("trigger: campaign_autumn", "trigger: campaign_winter"), "w.yaml")
    engine = DecisionEngine(winter, store, clock=lambda: NOW)
    run = run_campaign(engine, winter.campaigns["autumn"], customer_states(store.db), "w", NOW)
    assert (run.decided, dict(run.failed)) == (0, {"AlreadyExistsError": 4})
    assert _per_customer(store.db, "campaign:autumn:w:") == (4, 0)
    store.close()


def test_find_decisions_returns_the_stored_ones_by_request_id(fresh_url: str) -> None:
    catalog = parse_catalog(CATALOG.replace("BUDGET", ""), "c.yaml")
    for store in (Store(Database(fresh_url)), Store(Database(fresh_url), ids=CustomerIds(b"k" * 32))):
        prefix = "hashed" if store.ids.hashing else "raw"
        ids = [f"{prefix}-{i}" for i in range(3)]
        engine = DecisionEngine(catalog, store, clock=lambda: NOW)
        made = engine.decide_batch([DecisionRequest(f"{u}-req", u, "campaign_autumn", None) for u in ids[:2]])
        found = store.find_decisions([f"{u}-req" for u in ids] + ["nobody"])
        assert sorted(found) == [f"{u}-req" for u in ids[:2]]
        assert [found[f"{u}-req"].decision.decision_id for u in ids[:2]] == [
            d.decision_id for d in made if isinstance(d, Decision)
        ]
        assert store.find_decisions([]) == {}
        store.close()
    memory = MemoryStore()
    engine = DecisionEngine(catalog, memory, clock=lambda: NOW)
    engine.decide(DecisionRequest("m-req", "m", "campaign_autumn", None))
    assert list(memory.find_decisions(["m-req", "other"])) == ["m-req"]


# SIGKILLs the ``campaign run`` process from inside, in the middle of a batch: when the group commit
# starts its second transaction (the first, 256 decisions of the 500-member batch, is committed).
_KILLED_RUN = """
import os, signal, sys
from nextbest.store import decisions
calls = [0]
write = decisions.DecisionLog._write_decisions
def killing(self, conn, batch):
    calls[0] += 1
    if calls[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return write(self, conn, batch)
decisions.DecisionLog._write_decisions = killing
from nextbest.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_run_killed_with_sigkill_mid_batch_then_run_again_decides_everyone_once(
    fresh_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    store = Store(Database(fresh_url))
    users = _customers(store, 700, now - timedelta(days=20))
    store.close()
    catalog = tmp_path / "catalog.yaml"
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    catalog.write_text(
        CATALOG.replace("BUDGET", "")
        .replace("2026-11-01T00:00:00Z", (now - timedelta(days=1)).strftime(fmt))
        .replace("2026-12-01T00:00:00Z", (now + timedelta(days=1)).strftime(fmt))
    )
    args = [
        "campaign",
        "run",
        "autumn",
        "--run-id",
        "k",
        "--catalog",
        str(catalog),
        "--database-url",
        fresh_url,
    ]
    env = {**os.environ, "NEXTBEST_MODELS_DIR": str(tmp_path / "no-models")}
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, *args], env=env, capture_output=True, text=True, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    db = Database(fresh_url)
    committed, twice = _per_customer(db, "campaign:autumn:k:")
    assert 0 < committed < len(users) and twice == 0  # killed half-way through the first batch
    again = subprocess.run(
        [sys.executable, "-m", "nextbest", *args, "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert f"{len(users)} decided ({committed} replayed from an earlier attempt)" in again.stdout
    assert _per_customer(db, "campaign:autumn:k:") == (len(users), 0)
    db.dispose()
