"""SQLite's usual group commit (``sqlite_writes``) writes what the generic write writes and tells each
decision the same: inserted or replayed, conflict or not, customers' versions moved the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from nextbest.domain import Decision
from nextbest.store import Database, Store, ToSave, sqlite_writes, upgrade
from nextbest.store.schema import customers, decisions, exposures
from tests.store.test_store import T0, decision, saved_only


def _store(path: Path) -> Store:
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    return Store(db)


def _tables(store: Store) -> tuple[list[tuple[object, ...]], ...]:
    with store.db.reader.connect() as conn:
        return (
            sorted(tuple(r) for r in conn.execute(select(decisions.c.decision_id, decisions.c.request_id))),
            sorted(tuple(r) for r in conn.execute(select(exposures.c.decision_id, exposures.c.action_id))),
            sorted(tuple(r) for r in conn.execute(select(customers.c.user_id, customers.c.version))),
        )


def _batch() -> tuple[list[Decision], list[ToSave]]:
    earlier = [decision("a"), decision("a"), decision("c"), decision("x", request_id="r-old")]
    d = {name: decision(name) for name in "abcdeh"}
    d["e"] = decision("e", request_id="r-old")
    d["f"] = decision("f", request_id="r-dup")
    d["g"] = decision("g", request_id="r-dup")
    d["h"] = decision("h", actions=2)
    b2 = decision("b")
    a2 = decision("a")
    items = [
        ToSave(d["a"], "fp", T0, 2),  # a at 2: moves to 3
        ToSave(a2, "fp", T0, 2),  # a again on 2: conflict
        ToSave(d["b"], "fp", T0, 0),  # b first seen: created at 1
        ToSave(b2, "fp", T0, 1),  # then moved on from 1
        ToSave(d["c"], "fp", T0, 5),  # c read at a version long gone: conflict
        ToSave(d["d"], "fp", T0, 3),  # d has no row (erased): conflict, not brought back
        ToSave(d["e"], "fp", T0, 0),  # a stored request id: created customer, decision replayed
        ToSave(d["f"], "fp", T0),  # no guard
        ToSave(d["g"], "fp", T0),  # the same request id as f in the batch: replayed
        ToSave(d["h"], "fp", T0),  # two exposures
    ]
    return earlier, items


def _run(store: Store, earlier: list[Decision], items: list[ToSave]) -> list[tuple[bool, bool]]:
    for version, past in zip((0, 1, 0, None), earlier, strict=True):
        assert store.save_decision(past, "fp", T0, version)
    saved = store.save_decisions(items)
    return [(bool(s), s.conflict) for s in saved_only(saved)]


def test_the_usual_batch_is_written_as_the_generic_write_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier, items = _batch()
    fast, generic = _store(tmp_path / "fast.db"), _store(tmp_path / "generic.db")
    try:
        fast_results = _run(fast, earlier, items)
        assert fast.decisions._sqlite_write is not None  # it went through the fast write
        with monkeypatch.context() as m:
            m.setattr(sqlite_writes, "fits", lambda batch: False)
            generic_results = _run(generic, earlier, items)
        assert generic.decisions._sqlite_write is None  # and this one through the generic write
        assert fast_results == generic_results
        assert fast_results == [
            (True, False),
            (False, True),
            (True, False),
            (True, False),
            (False, True),
            (False, True),
            (False, False),
            (True, False),
            (False, False),
            (True, False),
        ]
        assert _tables(fast) == _tables(generic)
        versions = {str(user): version for user, version in _tables(fast)[2]}
        assert (versions["a"], versions["b"], versions["c"], versions["e"]) == (3, 2, 1, 1)
        assert "d" not in versions
    finally:
        fast.close()
        generic.close()
