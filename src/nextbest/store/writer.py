"""Group commit: concurrent calls share one transaction and one disk flush (decisions, and events).

There is no writer thread. A caller queues its members (a decision, or an event); when no commit is
under way it leads one: it takes the commit lock and writes everything queued so far in one transaction,
so while one transaction commits, the calls that arrive queue up and the next leader writes them all
together. The others wait on a condition the leader signals when its transaction is over. A caller
returns only once the transaction holding its members has committed: a response is never sent before
what it acknowledges is durable. Alone, a caller simply commits its own members, with no hand-off to
another thread.

A failed transaction acknowledges nothing. When the failure may be one member's fault (the database
refused some row's data: a NUL byte, a value out of range) the batch is written again in halves, each in
its own transaction, and a failing half in halves again, so that only the bad member fails and the others
commit (a bad member among n costs about 2 log2 n transactions); when it cannot be (the database is down)
every call in the batch fails at once, rather than waiting on the database once each.

A member may carry its caller's deadline (``time.monotonic()``). The leader checks it when it takes the
batch: a member whose deadline leaves less than a commit takes now (a moving estimate of this group
commit's transactions) is not written and fails with ``DeadlineExceededError``. The caller checked the
same before queueing, against how long writes took lately; this check also sees the time it then spent
in the queue, behind commits the estimate could not foresee (a burst of calls admitted at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from nextbest.deadlines import Duration
from nextbest.errors import DeadlineExceededError

__all__ = ["GroupCommit", "GroupCommitWriter", "Member", "PendingWrite"]

logger = logging.getLogger(__name__)


class Member(Protocol):
    """What the group commit needs of a member: whether it is settled, its failure if it failed, and its
    caller's deadline (``time.monotonic()``), if any."""

    done: bool
    error: BaseException | None
    deadline: float | None


M = TypeVar("M", bound=Member)
R = TypeVar("R")


class GroupCommit(Generic[M, R]):
    def __init__(
        self,
        begin: Callable[[], Any],
        write_batch: Callable[[Any, Sequence[M]], R],
        finish: Callable[[Sequence[M], R], None],
        *,
        what: str,
        max_batch: int = 256,
        isolate: Callable[[BaseException], bool] = lambda exc: False,
        forget: Callable[[M], None] = lambda member: None,
    ) -> None:
        """``begin`` is a context manager around one write transaction, yielding the connection that
        ``write_batch`` writes a batch on; ``finish`` applies what it returned to the members once the
        transaction has committed. ``isolate`` says whether a failure may come from one member's rows
        (then the batch is retried in halves); ``forget`` clears what a rolled-back attempt noted on a
        member. ``what`` names the members in log lines."""
        self._begin = begin
        self._write_batch = write_batch
        self._finish = finish
        self._what = what
        self._max_batch = max_batch
        self._isolate = isolate
        self._forget = forget
        self._queue: list[M] = []
        # Guards the queue and says whether a caller is leading a commit (``write_many``).
        self._cond = threading.Condition(threading.Lock())
        self._leading = False
        # Public so that maintenance which must not overlap a commit (a WAL restart) can hold it.
        self.commit_lock = threading.Lock()
        self.batches = 0
        self.writes = 0
        self.isolated = 0  # batches that failed and were retried in parts
        self.expired = 0  # members not written: their deadline came before a commit could end
        self._commit_time = Duration()

    def write_many(self, members: Sequence[M]) -> None:
        """Durably writes every member (with whatever else is queued), in as few transactions as the
        batch size allows; returns once each has committed or failed. Failures are not raised: each
        member's ``error`` says whether it, alone, failed.

        One caller at a time leads: it takes the queue and commits it while the others wait on a
        condition; when it is done it wakes them all at once, and those whose members it committed
        return straight away while one of the rest leads the next commit. (Waiting on the commit lock
        instead, a caller whose members had committed woke only when the lock came to it, often after
        the next batch's commit and its fsync: one commit's wait more, hand-off after hand-off.)"""
        if not members:
            return
        last = members[-1]  # the queue is first in, first out: when the last is settled, all are
        cond = self._cond
        with cond:
            self._queue.extend(members)
        while True:
            with cond:
                while self._leading and not last.done:
                    cond.wait()
                if last.done:
                    return
                self._leading = True
            batch: list[M] = []
            try:
                with self.commit_lock:  # the queue is taken once the lock is held: all that queued
                    with cond:
                        batch = self._queue[: self._max_batch]
                        del self._queue[: self._max_batch]
                    batch = self._expire(batch)
                    if batch:
                        started = time.monotonic()
                        self._commit(batch)
                        self._commit_time.observe(time.monotonic() - started)
            except BaseException as exc:  # not the database's: settle the batch, never leave it pending
                for member in batch:
                    if not member.done:
                        member.error, member.done = exc, True
                raise
            finally:
                with cond:
                    self._leading = False
                    cond.notify_all()

    def _expire(self, batch: list[M]) -> list[M]:
        """The batch without the members whose deadline leaves less than a commit takes now, which
        fail (nothing of them written)."""
        if all(member.deadline is None for member in batch):
            return batch
        now = time.monotonic()
        needed = self._commit_time.estimate()
        kept = []
        for member in batch:
            deadline = member.deadline
            if deadline is None or deadline - now > needed:
                kept.append(member)
                continue
            member.error = DeadlineExceededError(
                f"the caller's deadline left {max(deadline - now, 0.0) * 1000:.0f} ms when the write's "
                f"turn came, and a commit takes ~{needed * 1000:.0f} ms now; nothing was written"
            )
            member.done = True
            self.expired += 1
        return kept

    def _commit(self, batch: list[M], retry: bool = False) -> None:
        try:
            with self._begin() as conn:
                result = self._write_batch(conn, batch)
        except Exception as exc:  # the boundary: nothing in the batch was written
            if len(batch) > 1 and self._isolate(exc):
                if not retry:
                    logger.warning(
                        "group commit of %d %s refused (%s); writing them in halves",
                        len(batch),
                        self._what,
                        type(exc).__name__,
                    )
                    self.isolated += 1
                for member in batch:
                    self._forget(member)
                half = len(batch) // 2
                self._commit(batch[:half], retry=True)
                self._commit(batch[half:], retry=True)
                return
            if len(batch) > 1 or not self._isolate(exc):
                logger.exception("group commit of %d %s failed", len(batch), self._what)
            for member in batch:
                member.error, member.done = exc, True
            return
        self.batches += 1
        self.writes += len(batch)
        self._finish(batch, result)
        for member in batch:
            member.done = True


@dataclass(slots=True)
class PendingWrite:
    """One decision to insert. ``inserted`` is False when its ``request_id`` was already taken.
    ``cancellations`` are the pending exposures it preempts; ``cancelled`` the ids it actually cancelled
    (one cancelled concurrently by someone else is not). ``guard`` is the customer version the decision
    was made on (a row for the version check); ``conflict`` is True when the version had moved, and then
    nothing of the decision was written."""

    decision_row: dict[str, Any]
    exposure_rows: list[dict[str, Any]]
    assignment_rows: list[dict[str, Any]]
    cancellations: list[dict[str, Any]] = field(default_factory=list)
    guard: dict[str, Any] | None = None
    deadline: float | None = None
    cancelled: set[int] = field(default_factory=set)
    done: bool = False
    inserted: bool = False
    conflict: bool = False
    error: BaseException | None = field(default=None)


class GroupCommitWriter(GroupCommit[PendingWrite, set[str]]):
    """The group commit of decisions; ``write_batch`` returns the decision ids it actually inserted."""

    def __init__(
        self,
        begin: Callable[[], Any],
        write_batch: Callable[[Any, Sequence[PendingWrite]], set[str]],
        max_batch: int = 256,
        isolate: Callable[[BaseException], bool] = lambda exc: False,
    ) -> None:
        super().__init__(
            begin,
            write_batch,
            _mark_inserted,
            what="decisions",
            max_batch=max_batch,
            isolate=isolate,
            forget=_forget_attempt,
        )

    def write(
        self,
        decision_row: dict[str, Any],
        exposure_rows: list[dict[str, Any]],
        assignment_rows: list[dict[str, Any]],
        cancellations: list[dict[str, Any]] | None = None,
        guard: dict[str, Any] | None = None,
    ) -> PendingWrite:
        """Durably writes the rows (with whatever else is queued); the item says whether the decision
        was inserted, whether its version guard failed and which cancellations took effect."""
        item = PendingWrite(decision_row, exposure_rows, assignment_rows, cancellations or [], guard)
        self.write_many([item])
        if item.error is not None:
            raise item.error
        return item


def _mark_inserted(batch: Sequence[PendingWrite], inserted: set[str]) -> None:
    for item in batch:
        item.inserted = item.decision_row["decision_id"] in inserted


def _forget_attempt(item: PendingWrite) -> None:
    """Clears what a rolled-back attempt noted on the item. Its payload keeps only the cancellations
    that attempt made, a superset of what the next one can make, which filters it again."""
    item.cancelled = set()
    item.conflict = False
