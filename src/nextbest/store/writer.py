"""Group commit for decisions: concurrent calls share one transaction and one disk flush.

Each caller hands its decision to a single writer thread and waits. The thread takes everything queued
(up to ``max_batch``), writes it in one transaction and only then wakes the callers, so a response is
never sent before its decision is durable, while the flush cost is shared by every call that arrived
during the previous one. A failed transaction fails every call in it; nothing is acknowledged.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

__all__ = ["GroupCommitWriter", "PendingWrite"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingWrite:
    """One decision to insert. The future resolves to True if it was inserted, False if its
    ``request_id`` was already taken (by an earlier or concurrent call)."""

    decision_row: dict[str, Any]
    exposure_rows: list[dict[str, Any]]
    future: Future[bool]


_STOP = object()


class GroupCommitWriter:
    def __init__(
        self,
        begin: Callable[[], Any],
        write_batch: Callable[[Connection, Sequence[PendingWrite]], set[str]],
        max_batch: int = 256,
    ) -> None:
        """``begin`` opens a transaction (``engine.begin``); ``write_batch`` inserts a batch and returns
        the decision ids it actually inserted."""
        self._begin = begin
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="nextbest-group-commit", daemon=True)
        self._closed = False
        self.batches = 0
        self.writes = 0
        self._thread.start()

    def submit(self, decision_row: dict[str, Any], exposure_rows: list[dict[str, Any]]) -> Future[bool]:
        if self._closed:
            raise RuntimeError("writer is closed")
        future: Future[bool] = Future()
        self._queue.put(PendingWrite(decision_row, exposure_rows, future))
        return future

    def close(self, timeout: float = 10.0) -> None:
        """Writes what is queued, then stops the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[PendingWrite] = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[PendingWrite]) -> None:
        try:
            with self._begin() as conn:
                inserted = self._write_batch(conn, batch)
        except Exception as exc:  # the boundary: every waiter learns the write failed
            logger.exception("group commit of %d decisions failed", len(batch))
            for item in batch:
                item.future.set_exception(exc)
            return
        self.batches += 1
        self.writes += len(batch)
        for item in batch:
            item.future.set_result(item.decision_row["decision_id"] in inserted)
