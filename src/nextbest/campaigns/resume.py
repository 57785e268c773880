"""A campaign batch that finds what its run already decided in one read, and decides only the rest.

A run started again after a crash (same run id) walks the audience from the start: every member it had
reached asks for a request id that is taken. ``DecisionEngine.decide_batch`` would answer each of them
correctly (it decides, finds the id taken at commit, and reads the stored decision back), but at the cost
of a whole decision and one more read per member: a re-run after a crash at 900,000 of 1,000,000 would
redo 900,000 decisions. Here one indexed read per batch (the unique request id) finds the batch's stored
decisions; those replay as ``decide_batch`` would replay them (the same fingerprint check), and only the
others are decided. Nothing is kept from one batch to the next.

A large batch is decided as three parts at once (threads for the second and third): one process deciding
alone waits on the database for about half its time (the snapshot reads, the group commit), and the
other parts' Python work fills those waits, as concurrent ``NextActionBatch`` calls do in the server.
Every part is committed before the batch returns, so a run still stops after the batch it last yielded.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from nextbest.decision.engine import DecisionEngine, request_fingerprint
from nextbest.domain import Decision, DecisionRequest
from nextbest.errors import AlreadyExistsError, NextbestError

__all__ = ["SPLIT_AT", "decide_part", "decide_resuming"]

# A batch of at least this many members is decided as ``PARTS`` parts at once; a smaller one (a budget's
# last sends, a test's handful) in order, in the calling thread.
SPLIT_AT = 100
PARTS = 3

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _others() -> ThreadPoolExecutor:
    global _pool  # noqa: PLW0603 - threads for every run of the process, made on first use
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=PARTS - 1, thread_name_prefix="nextbest-campaign")
        return _pool


def decide_resuming(
    engine: DecisionEngine, requests: Sequence[DecisionRequest]
) -> list[Decision | NextbestError]:
    """:func:`decide_part` of the whole batch, a large one (``SPLIT_AT``) as ``PARTS`` contiguous parts
    decided at once; one result per item, in order."""
    if len(requests) < SPLIT_AT:
        return decide_part(engine, requests)
    size = -(-len(requests) // PARTS)
    parts = [requests[i : i + size] for i in range(0, len(requests), size)]
    others = [_others().submit(decide_part, engine, part) for part in parts[1:]]
    try:
        results = decide_part(engine, parts[0])
    except BaseException:
        for other in others:
            other.exception()  # the other parts end (committed or not) before the error goes up
        raise
    for other in others:
        results += other.result()
    return results


def decide_part(
    engine: DecisionEngine, requests: Sequence[DecisionRequest]
) -> list[Decision | NextbestError]:
    """``engine.decide_batch(requests)``, the items already decided replayed from one read of the store
    instead of decided again; one result per item, in order. Campaign requests ask for explanations,
    which a replay returns as stored; a batch with any request that does not is left to ``decide_batch``."""
    if not all(r.explain for r in requests):
        return engine.decide_batch(requests)
    try:
        stored = engine.store.find_decisions([r.request_id for r in requests])
    except NextbestError as exc:
        return [exc] * len(requests)
    if not stored:
        return engine.decide_batch(requests)
    fresh = [r for r in requests if r.request_id not in stored]
    decided = iter(engine.decide_batch(fresh) if fresh else [])
    results: list[Decision | NextbestError] = []
    for request in requests:
        found = stored.get(request.request_id)
        if found is None:
            results.append(next(decided))
        elif found.fingerprint != request_fingerprint(request):
            results.append(
                AlreadyExistsError(
                    f"request_id {request.request_id!r} was already used for a different request "
                    f"(decision {found.decision.decision_id}); use a new run id for a new wave"
                )
            )
        else:
            results.append(found.decision)
    return results
