"""The group commit's hand-off: callers whose members a commit settled return when it ends, without
waiting for the next commit; a failure that is not the database's settles its batch and is raised."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from nextbest.errors import DeadlineExceededError
from nextbest.store.writer import GroupCommit


@dataclass(eq=False)
class Item:
    name: str
    done: bool = False
    error: BaseException | None = None
    deadline: float | None = None


@contextmanager
def _no_transaction() -> Iterator[None]:
    yield None


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.002)
    assert condition(), what


def test_callers_settled_by_a_commit_return_while_the_next_commit_is_under_way() -> None:
    first_started, first_may_end = threading.Event(), threading.Event()
    second_started, second_may_end = threading.Event(), threading.Event()
    batches: list[list[str]] = []

    def write_batch(_conn: object, batch: Sequence[Item]) -> None:
        names = [item.name for item in batch]
        batches.append(names)
        if "a" in names:
            first_started.set()
            assert first_may_end.wait(10)
        if "b" in names:
            second_started.set()
            assert second_may_end.wait(10)

    commit: GroupCommit[Item, None] = GroupCommit(
        _no_transaction, write_batch, lambda b, r: None, what="items"
    )
    items = {name: Item(name) for name in "acb"}
    threads = {n: threading.Thread(target=commit.write_many, args=([item],)) for n, item in items.items()}
    with commit.commit_lock:  # a and c queue together, for one commit
        threads["a"].start()
        threads["c"].start()
        _wait_for(lambda: len(commit._queue) == 2, "a and c queued")
    assert first_started.wait(10)
    threads["b"].start()  # arrives while a and c commit
    _wait_for(lambda: len(commit._queue) == 1, "b queued")
    first_may_end.set()
    assert second_started.wait(10)
    threads["a"].join(10)
    threads["c"].join(10)
    try:
        # Both return while b's commit is still under way (it waits for second_may_end).
        assert not threads["a"].is_alive() and not threads["c"].is_alive()
        assert threads["b"].is_alive() and not items["b"].done
        assert sorted(batches[0]) == ["a", "c"] and batches[1:] == [["b"]]
    finally:
        second_may_end.set()
        threads["b"].join(10)
    assert all(item.done and item.error is None for item in items.values())
    assert commit.batches == 2 and commit.writes == 3


def test_a_failure_that_is_not_the_databases_settles_the_batch_and_is_raised() -> None:
    def write_batch(_conn: object, batch: Sequence[Item]) -> None:
        return None

    def finish(_batch: Sequence[Item], _result: None) -> None:
        raise KeyError("a bug in finish")

    commit: GroupCommit[Item, None] = GroupCommit(_no_transaction, write_batch, finish, what="items")
    items = [Item("a"), Item("b")]
    with pytest.raises(KeyError):
        commit.write_many(items)
    assert all(item.done and isinstance(item.error, KeyError) for item in items)
    after = Item("c")  # the next caller leads as usual
    with pytest.raises(KeyError):
        commit.write_many([after])
    assert after.done and isinstance(after.error, KeyError)


def test_a_member_whose_deadline_passed_in_the_queue_is_not_written() -> None:
    """The caller checked its deadline before queueing; the wait behind a slow commit is seen when the
    member's turn comes: it fails, unwritten, and the members with time left (or no deadline) commit."""
    written: list[str] = []

    def write_batch(_conn: object, batch: Sequence[Item]) -> None:
        written.extend(item.name for item in batch)

    commit: GroupCommit[Item, None] = GroupCommit(
        _no_transaction, write_batch, lambda b, r: None, what="items"
    )
    now = time.monotonic()
    items = [Item("late", deadline=now + 0.05), Item("on-time", deadline=now + 60), Item("no-deadline")]
    threads = [threading.Thread(target=commit.write_many, args=([item],)) for item in items]
    with commit.commit_lock:  # a commit under way, longer than the first caller has
        for thread in threads:
            thread.start()
        _wait_for(lambda: len(commit._queue) == 3, "all queued")
        time.sleep(0.1)
    for thread in threads:
        thread.join(10)
    late, on_time, none = items
    assert isinstance(late.error, DeadlineExceededError) and late.done
    assert "nothing was written" in str(late.error)
    assert on_time.error is None and none.error is None and on_time.done and none.done
    assert written == ["on-time", "no-deadline"] and commit.expired == 1 and commit.writes == 2
