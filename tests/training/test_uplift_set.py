"""Which exposures an uplift model trains on: each unit's first exposure to each chosen holdout experiment,
only where that experiment's own arm decided whether the message went out (the engine on SQLite and
PostgreSQL, arms from the experiments' hashing)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from nextbest.catalog import Catalog, parse_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import DecisionRequest, Event, EventType, RequestContext
from nextbest.experiments import Experiment, assign
from nextbest.models import features as feats
from nextbest.store import Database, Store, upgrade
from nextbest.training.datasets import propensity_set, uplift_set
from tests.conftest import BACKENDS, fresh_postgres_database

T0 = datetime(2026, 11, 10, 9, tzinfo=UTC)
WINDOW = timedelta(days=7)
AS_OF = T0 + timedelta(days=10)
USERS = [f"u{i:03d}" for i in range(240)]
BUYERS = set(USERS[::3])  # order a day after the decision, within the window

CATALOG = parse_catalog(
    """\
version: 1
channels: {onsite: {requires_consent: false}}
flows:
  cart: {priority: 80, entry_triggers: [cart_abandoned], exit_on: [order_placed]}
actions:
  - id: banner
    flow: cart
    channel: onsite
    class: triggered
    triggers: [cart_abandoned]
    value: 50
experiments:
  - id: flow_holdout
    scope: {flows: [cart]}
    arms: [{id: control, weight: 0.5, no_action: true}, {id: treatment, weight: 0.5}]
  - id: banner_holdout
    scope: {actions: [banner]}
    arms: [{id: withheld, weight: 0.4, no_action: true}, {id: sent, weight: 0.6}]
  - id: banner_copy
    scope: {actions: [banner]}
    arms: [{id: a, weight: 0.5}, {id: b, weight: 0.5, parameters: {copy: b}}]
""",
    "pooled.yaml",
)
FLOW, BANNER, COPY = CATALOG.experiments


@contextmanager
def _fresh_url(backend: str, path: Path) -> Iterator[str]:
    """An empty database of its own (the training set reads every assignment in it)."""
    if backend == "sqlite":
        yield f"sqlite:///{path}"
        return
    with fresh_postgres_database("nextbest_uplift") as url:
        yield url


def _store(url: str, users: list[str]) -> Database:
    """A store where ``users`` each abandoned a cart at T0, decided in that order, and the buyers
    ordered a day later."""
    database = Database(url)
    upgrade(database)
    store = Store(database)
    engine = DecisionEngine(CATALOG, store, clock=lambda: T0)
    for user in users:
        engine.decide(
            DecisionRequest(f"r-{user}", user, "cart_abandoned", T0, RequestContext(cart_value=40.0))
        )
    engine.record_events(
        [Event(f"o-{u}", u, EventType.ORDER_PLACED, T0 + timedelta(days=1), value=40.0) for u in BUYERS]
    )
    store.close()
    return database


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def db(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    with _fresh_url(backend, tmp_path_factory.mktemp("pooled") / "p.db") as url:
        database = _store(url, USERS)
        yield database
        database.dispose()


def _arm(experiment: Experiment, user: str) -> str:
    arm = assign(experiment, user).arm
    assert arm is not None
    return arm.id


def _rows(db: Database, experiments: tuple[str, ...], owner: str) -> dict[str, tuple[bool, float]]:
    """(treated, label) by user, as the training set has them. The set does not carry user ids: every
    decision was made at one instant, and rows tied in time are ordered by customer (ids sort as
    ``USERS``), so they follow the users that ``owner`` keeps (their count is checked)."""
    data = uplift_set(db, WINDOW, AS_OF, experiments)
    assert data.treated is not None
    users = [u for u in USERS if _kept(owner, u)]
    assert len(users) == len(data)
    return {u: (bool(t), float(y)) for u, t, y in zip(users, data.treated, data.y, strict=True)}


def _kept(owner: str, user: str) -> bool:
    """Whether ``user``'s banner decision is a randomized row of ``owner`` when both holdouts are pooled
    or ``owner`` is alone: no other experiment's holdout arm withheld it."""
    if owner == FLOW.id:
        return _arm(BANNER, user) != "withheld"
    return _arm(FLOW, user) != "control"


@pytest.mark.parametrize("order", [(FLOW.id, BANNER.id), (BANNER.id, FLOW.id)])
def test_each_decision_is_analysed_within_the_first_experiment_listed(
    db: Database, order: tuple[str, str]
) -> None:
    owner = order[0]
    rows = _rows(db, order, owner)
    assert 60 < len(rows) < 180  # both arms of the other experiment occur: something was left out
    for user, (treated, label) in rows.items():
        arm = _arm(FLOW if owner == FLOW.id else BANNER, user)
        assert treated is (arm in ("treatment", "sent")), user
        assert label == float(user in BUYERS)


def test_a_decision_another_holdout_withheld_is_left_out_of_one_experiment_too(db: Database) -> None:
    """Alone, an experiment still loses the rows another experiment's holdout arm decided: the units its
    treated arm did not get the message are not its control."""
    alone = _rows(db, (FLOW.id,), FLOW.id)
    assert all(treated is (_arm(FLOW, u) == "treatment") for u, (treated, _) in alone.items())


def test_by_default_the_experiment_with_the_most_held_out_units(db: Database) -> None:
    data = uplift_set(db, WINDOW, AS_OF)
    held = {e.id: sum(_arm(e, u) in ("control", "withheld") for u in USERS) for e in (FLOW, BANNER)}
    assert data.source["experiment"] == max(held, key=held.__getitem__)
    assert data.categories[feats.ACTION] == ["banner"]


def test_an_experiment_without_a_holdout_arm_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="'banner_copy' has no holdout arm"):
        uplift_set(db, WINDOW, AS_OF, (FLOW.id, COPY.id))
    with pytest.raises(ValueError, match="'nope' has no holdout arm"):
        uplift_set(db, WINDOW, AS_OF, ("nope",))


def test_the_model_command_names_what_to_pool(tmp_path: Path) -> None:
    from nextbest.cli import main

    with pytest.raises(SystemExit, match="--experiments names the holdout experiments"):
        main(["train", "propensity", "--experiments", "a", "--database-url", f"sqlite:///{tmp_path}/x.db"])


def test_the_same_store_gives_the_same_rows_whatever_order_it_was_written_in(
    db: Database, backend: str, tmp_path: Path
) -> None:
    """Concurrent callers commit in any order: rows tied in time follow the customers, not the ids the
    database gave them, so the split by time and the model trained on it are the same."""
    with _fresh_url(backend, tmp_path / "backwards.db") as url:
        backwards = _store(url, USERS[::-1])
        try:
            _same_rows(db, backwards)
        finally:
            backwards.dispose()


def _same_rows(db: Database, backwards: Database) -> None:
    for experiments in ((FLOW.id, BANNER.id), ()):
        one, other = (uplift_set(d, WINDOW, AS_OF, experiments) for d in (db, backwards))
        assert one.treated is not None and other.treated is not None
        assert np.array_equal(one.x, other.x, equal_nan=True) and (one.y == other.y).all()
        assert (one.treated == other.treated).all()
    sent, sent_too = (propensity_set(d, WINDOW, AS_OF) for d in (db, backwards))
    assert np.array_equal(sent.x, sent_too.x, equal_nan=True) and (sent.y == sent_too.y).all()


def _two_flows(share: float) -> Catalog:
    """A cart flow and a browse flow, each with a holdout of its own (the browse one at ``share``)."""
    return parse_catalog(
        f"""\
version: 1
channels: {{onsite: {{requires_consent: false}}}}
flows:
  cart: {{priority: 80, entry_triggers: [cart_abandoned], exit_on: [order_placed]}}
  browse: {{priority: 60, entry_triggers: [product_viewed], exit_on: [order_placed]}}
actions:
  - {{id: banner, flow: cart, channel: onsite, class: triggered, triggers: [cart_abandoned], value: 50}}
  - {{id: popup, flow: browse, channel: onsite, class: triggered, triggers: [product_viewed], value: 20}}
experiments:
  - id: cart_holdout
    scope: {{flows: [cart]}}
    arms: [{{id: control, weight: 0.5, no_action: true}}, {{id: treatment, weight: 0.5}}]
  - id: browse_holdout
    scope: {{flows: [browse]}}
    arms: [{{id: control, weight: {share}, no_action: true}}, {{id: treatment, weight: {1 - share}}}]
""",
        "two-flows.yaml",
    )


@pytest.mark.parametrize("share", [0.5, 0.4])
def test_experiments_pool_only_with_the_same_holdout_share(
    backend: str, share: float, tmp_path: Path
) -> None:
    """Two flows' holdouts pool their rows (each action learned from its own experiment) when they hold
    out the same share; with different shares a row's chance of being treated would depend on its
    experiment, and the set is refused."""
    catalog = _two_flows(share)
    users = USERS[:120]
    with _fresh_url(backend, tmp_path / "two.db") as url:
        database = Database(url)
        upgrade(database)
        store = Store(database)
        engine = DecisionEngine(catalog, store, clock=lambda: T0)
        # Half the customers abandon a cart, the others view a product: no one is in both flows (a cart
        # journey keeps its customer out of the browse flow's lower priority).
        for i, user in enumerate(users):
            cart = bool(i % 2)
            trigger = "cart_abandoned" if cart else "product_viewed"
            context = RequestContext(cart_value=40.0) if cart else RequestContext()
            engine.decide(DecisionRequest(f"r-{user}", user, trigger, T0, context))
        store.close()
        try:
            pooled = ("cart_holdout", "browse_holdout")
            if share == 0.5:
                data = uplift_set(database, WINDOW, AS_OF, pooled)
                assert len(data) == len(users)
                assert data.categories[feats.ACTION] == ["banner", "popup"]
            else:
                with pytest.raises(
                    ValueError, match=r"different shares of their units \(browse_holdout 40 %"
                ):
                    uplift_set(database, WINDOW, AS_OF, pooled)
            assert len(uplift_set(database, WINDOW, AS_OF, ("browse_holdout",))) == len(users) // 2
        finally:
            database.dispose()
