"""The decision pipeline's orchestrator: it calls the stages and the store, nothing else (no gRPC).

A ``NextAction`` request runs, in this order:

1. ``validate``     every problem with the request, as field violations (nothing is written);
2. store            the customer's snapshot: state, contact history, pending actions, inventory;
3. ``candidates``   the catalog's actions for the trigger on the allowed channels;
4. per candidate, the first refusal wins:
   ``gates``        suppression, consent, re-entry, exit, journey membership, then inventory;
   ``contact``      engagement, the conflict check with higher journeys, flow steps, cooldowns;
   ``rules``        the step condition and the action's CEL rule;
5. ``experiments``  assignment in every active experiment covering a candidate; arms applied;
6. ``scoring``      expected value (propensity or uplift) per candidate; no expected lift is refused;
7. ``arbitration``  priority queue, one action per channel, ``max_actions``; for each candidate in turn,
   ``send_time``    the best hour that ``contact``'s quiet hours and caps allow — run once as if no one
                    were held out (the counterfactual), then for what can be sent;
8. ``contact``      the pending actions the winners preempt;
9. store            the decision and its exposures, durably, with a version check on the customer (a
                    change meanwhile makes the engine decide again); a retried ``request_id`` replays.

``RecordEvents`` validates each event (``validate``), and the store folds them into customer state and
cancels the pending actions ``contact.cancel_reason`` says they end.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from zoneinfo import ZoneInfo

from nextbest.catalog import Catalog
from nextbest.deadlines import Duration
from nextbest.decision.arbitration import arbitrate, rank_constants
from nextbest.decision.candidates import Candidate, Refusal, rejection
from nextbest.decision.contact import (
    ContactLog,
    cancel_reason,
    conflict_failure,
    engagement_failure,
    preemptions,
    step_failure,
)
from nextbest.decision.experiments import apply_experiments
from nextbest.decision.gates import channel_gate, check_inventory, journey_gate
from nextbest.decision.journeys import FlowFacts, JourneyBook, step_delay
from nextbest.decision.plan import Plans, TriggerPlan
from nextbest.decision.rules import RuleScope, check_rules
from nextbest.decision.scoring import ScoredCandidate, score_candidates
from nextbest.decision.validate import MAX_EVENTS, validate_event, validate_request
from nextbest.domain import (
    ActionClass,
    ChosenAction,
    Decision,
    DecisionRequest,
    Event,
    EventOutcome,
    EventResult,
    ExperimentExposure,
    ReasonCode,
    Rejection,
)
from nextbest.errors import (
    AlreadyExistsError,
    ConflictError,
    DeadlineExceededError,
    FieldViolation,
    InvalidArgumentError,
    NextbestError,
)
from nextbest.models import ModelRegistry, ModelSet
from nextbest.state import CustomerSnapshot, Journey
from nextbest.store import DecisionStore, SavedDecision, SnapshotWanted, ToSave

__all__ = ["MAX_BATCH", "DecisionEngine", "new_decision_id", "request_fingerprint", "utc_now"]

logger = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def request_fingerprint(request: DecisionRequest) -> str:
    """A digest of what the caller asked. ``explain`` is left out: asking again with explain is the same
    question and replays the same decision, with its reasons. The ``repr`` of a tuple of strings, numbers
    and None is stable across processes and versions, and much cheaper than canonical JSON."""
    ctx = request.context
    canonical = (
        request.user_id,
        request.trigger,
        request.occurred_at.isoformat() if request.occurred_at else None,
        ctx.cart_value,
        tuple(ctx.product_ids),
        ctx.page_category,
        ctx.time_zone,
        tuple(sorted(ctx.attributes.items())) if ctx.attributes else (),
        tuple(ctx.out_of_stock_product_ids),
        tuple([c.value if c else None for c in request.channels]) if request.channels else (),
        request.max_actions or 1,
    )
    return hashlib.sha256(repr(canonical).encode()).hexdigest()


def new_decision_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: 48 bits of Unix milliseconds, then 74 random bits. Being
    time-ordered, decisions append at the end of the decision-id indexes instead of dirtying a random
    index page each (12 % fewer WAL pages per decision on SQLite under group commit)."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (time.time_ns() // 1_000_000) << 80
        | _VERSION
        | (rand >> 68) << 64  # 12 random bits
        | _VARIANT
        | rand & _LOW_62  # 62 random bits
    )
    return f"{value:032x}"


_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_LOW_62 = (1 << 62) - 1


_STRIPES = 1024
# How many times a decision is made again when the customer changed while it was being made (another
# process or replica decided for them or folded in their events: see ``Store.save_decision``).
MAX_ATTEMPTS = 5
# The most requests one ``decide_batch`` (``NextActionBatch``) call takes.
MAX_BATCH = 500
_NO_MODELS = ModelSet()
_REFUSED = FieldViolation("event", "the database refused this event's data; nothing of it was stored")


def _stripe(user_id: str) -> int:
    return zlib.crc32(user_id.encode()) % _STRIPES


class DecisionEngine:
    def __init__(
        self,
        catalog: Catalog,
        store: DecisionStore,
        clock: Callable[[], datetime] = utc_now,
        models: ModelRegistry | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.clock = clock
        self.models = models
        # One customer's decisions and events are serialized in this process (striped locks): caps and
        # preemptions read the contact history and must not race another call for the same customer.
        self._locks = [threading.Lock() for _ in range(_STRIPES)]
        self._needs_stock = frozenset(
            t for a in catalog.actions if a.inventory == "in_stock" for t in a.triggers
        )
        self._plans = Plans(catalog)
        self._flow_facts = FlowFacts(catalog)
        self._ranks = rank_constants(catalog.flows, catalog.actions)
        self._decide_time = Duration()
        self._write_time = Duration()
        # One rule object for every call: the events' group commit cancels once per rule in a batch.
        self._cancel_rule = partial(cancel_reason, catalog)

    def decide(self, request: DecisionRequest, deadline: float | None = None) -> Decision:
        """Answers one NextAction request; the decision is durable when this returns.

        ``deadline`` is the caller's, as a ``time.monotonic()`` instant: a call that reaches it, or that
        would reach it before its decision could be written, raises ``DeadlineExceededError`` with
        nothing decided or written (an exposure for an answer nobody receives would bias lift)."""
        violations = validate_request(request, self.catalog)
        if violations:
            raise InvalidArgumentError(violations)
        fingerprint = request_fingerprint(request)
        # Optimistic: decide, then insert; the unique request_id turns a retry into a conflict, answered
        # from the stored decision. New requests (the common case) skip a lookup.
        with self._locks[_stripe(request.user_id)]:
            for _attempt in range(MAX_ATTEMPTS):
                if deadline is not None:
                    Duration.check(deadline, "before deciding", self._decide_time.estimate())
                started = time.monotonic()
                decided_at = self.clock()
                now = request.occurred_at or decided_at
                decision, saved = self._decide(request, fingerprint, decided_at, now, deadline)
                self._decide_time.observe(time.monotonic() - started)
                if not saved.conflict:
                    break
                # No customer id in the log (STYLE, Logging); the caller's retries are not news.
                logger.debug("customer changed while deciding; deciding again (attempt %d)", _attempt + 1)
            else:
                raise ConflictError(
                    f"customer {request.user_id!r} kept changing while this call decided "
                    f"({MAX_ATTEMPTS} attempts); nothing was written, retry with the same request_id"
                )
        if not saved:
            # An earlier or concurrent call with this request_id committed first: replay its answer.
            stored = self.store.find_decision(request.request_id)
            if stored is None:  # pragma: no cover - the conflicting row cannot vanish
                raise RuntimeError("request_id conflict without a stored decision")
            return self._replay(request, stored.decision, stored.fingerprint, fingerprint)
        # A catalog without experiments holds no one out: no HELD_OUT reason to keep.
        return (
            decision if request.explain else _without_explanations(decision, bool(self.catalog.experiments))
        )

    def dry_run(self, request: DecisionRequest) -> Decision:
        """What ``decide`` would answer now, with every reason, and nothing written (campaign plans).
        Raises ``InvalidArgumentError`` for a request ``decide`` would refuse."""
        violations = validate_request(request, self.catalog)
        if violations:
            raise InvalidArgumentError(violations)
        now = request.occurred_at or self.clock()
        return self._make_decision(request, self._load(request, now), now)

    def decide_batch(
        self, requests: Sequence[DecisionRequest], deadline: float | None = None
    ) -> list[Decision | NextbestError]:
        """Answers up to ``MAX_BATCH`` NextAction requests, in order: each item gets its decision or the
        error it alone would have raised (``InvalidArgumentError`` with field paths relative to the item,
        ``AlreadyExistsError``, ``ConflictError``, ``DeadlineExceededError``, ``StoreUnavailableError``).
        A bad item fails alone; the others are answered. Each item keeps its own ``request_id`` and
        idempotency, and two items for one customer are decided in order, the second seeing the first.

        The items are decided in rounds: the k-th item of each customer (and of each request id) is in
        round k, and a round's decisions are saved together (one group commit for up to the writer's
        batch size), so a customer's later items see their earlier ones (caps, cooldowns, preemptions)
        and a repeated request id replays. An item not started before ``deadline`` (with the time a
        write takes now still left) gets ``DeadlineExceededError``, nothing written for it."""
        if len(requests) > MAX_BATCH:
            raise InvalidArgumentError(
                [FieldViolation("requests", f"at most {MAX_BATCH} requests per call, got {len(requests)}")]
            )
        results: list[Decision | NextbestError | None] = [None] * len(requests)
        fingerprints: list[str] = [""] * len(requests)
        rounds: list[list[int]] = []
        last_round: dict[tuple[str, str], int] = {}
        for index, request in enumerate(requests):
            violations = validate_request(request, self.catalog)
            if violations:
                results[index] = InvalidArgumentError(violations)
                continue
            fingerprints[index] = request_fingerprint(request)
            keys = (("user", request.user_id), ("request", request.request_id))
            k = max(last_round.get(key, -1) for key in keys) + 1
            for key in keys:
                last_round[key] = k
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(index)
        replays: list[int] = []
        for members in rounds:
            replays += self._decide_round(requests, members, fingerprints, results, deadline)
        for index in replays:
            try:
                stored = self.store.find_decision(requests[index].request_id)
                if stored is None:  # pragma: no cover - the conflicting row cannot vanish
                    raise RuntimeError("request_id conflict without a stored decision")
                results[index] = self._replay(
                    requests[index], stored.decision, stored.fingerprint, fingerprints[index]
                )
            except NextbestError as exc:
                results[index] = exc
        done = [r for r in results if r is not None]
        assert len(done) == len(requests)  # every item answered
        return done

    def _decide_round(
        self,
        requests: Sequence[DecisionRequest],
        members: list[int],
        fingerprints: list[str],
        results: list[Decision | NextbestError | None],
        deadline: float | None,
    ) -> list[int]:
        """Decides the round's items (distinct customers and request ids) and saves them together,
        deciding again those whose customer changed meanwhile; fills ``results`` and returns the items
        whose request id was taken (to replay)."""
        replays: list[int] = []
        # No stripe locks: a round holding ~100 customers' stripes (of 1,024) would make concurrent
        # batches wait for each other's decisions and commits. The customer version checked at commit
        # keeps them exact instead, as it does across processes: an item whose customer a concurrent
        # call changed conflicts and is decided again.
        todo = members
        for _attempt in range(MAX_ATTEMPTS):
            made: list[tuple[int, Decision]] = []
            to_save: list[ToSave] = []
            # The round's customers are read together (a few reads, not a few per item).
            times = []
            for index in todo:
                decided_at = self.clock()
                times.append((decided_at, requests[index].occurred_at or decided_at))
            try:
                Duration.check(deadline, "before deciding", self._write_time.estimate())
                snapshots = self.store.load_snapshots(
                    [self._wanted(requests[i], now) for i, (_, now) in zip(todo, times, strict=True)]
                )
            except NextbestError as exc:
                for index in todo:
                    results[index] = exc
                return replays
            for index, (decided_at, now), snapshot in zip(todo, times, snapshots, strict=True):
                try:
                    Duration.check(deadline, "before deciding", self._write_time.estimate())
                    decision = self._make_decision(requests[index], snapshot, now)
                except NextbestError as exc:
                    results[index] = exc
                    continue
                made.append((index, decision))
                to_save.append(ToSave(decision, fingerprints[index], decided_at, snapshot.version, deadline))
            if not made:
                return replays
            try:
                Duration.check(deadline, "before writing", self._write_time.estimate())
            except DeadlineExceededError as exc:
                for index, _ in made:
                    results[index] = exc
                return replays
            todo = []
            for (index, decision), saved in zip(made, self.store.save_decisions(to_save), strict=True):
                if isinstance(saved, NextbestError):
                    results[index] = saved
                elif saved.conflict:
                    todo.append(index)
                elif not saved:
                    replays.append(index)
                else:
                    written = _as_saved(decision, saved)
                    results[index] = written if requests[index].explain else _without_explanations(written)
            if not todo:
                return replays
        for index in todo:
            results[index] = ConflictError(
                f"customer {requests[index].user_id!r} kept changing while this call decided "
                f"({MAX_ATTEMPTS} attempts); nothing was written, retry with the same request_id"
            )
        return replays

    def _decide(
        self,
        request: DecisionRequest,
        fingerprint: str,
        decided_at: datetime,
        now: datetime,
        deadline: float | None = None,
    ) -> tuple[Decision, SavedDecision]:
        # ``_load``, inlined (every call).
        products = request.context.product_ids if request.trigger in self._needs_stock else ()
        snapshot = self.store.load_snapshot(request.user_id, now, products)
        decision = self._make_decision(request, snapshot, now)
        if deadline is not None:
            Duration.check(deadline, "before writing", self._write_time.estimate())
        started = time.monotonic()
        saved = self.store.save_decision(decision, fingerprint, decided_at, snapshot.version, deadline)
        self._write_time.observe(time.monotonic() - started)
        return _as_saved(decision, saved), saved

    def _load(self, request: DecisionRequest, now: datetime) -> CustomerSnapshot:
        """The customer's snapshot, with the stock of the request's products when the trigger needs it."""
        return self.store.load_snapshot(*self._wanted(request, now))

    def _wanted(self, request: DecisionRequest, now: datetime) -> SnapshotWanted:
        products = request.context.product_ids if request.trigger in self._needs_stock else ()
        return SnapshotWanted(request.user_id, now, products)

    def _make_decision(self, request: DecisionRequest, snapshot: CustomerSnapshot, now: datetime) -> Decision:
        """The decision for a valid request on the customer's ``snapshot``, at ``now``: candidates,
        eligibility, experiments, scoring, send time, arbitration and preemptions. Reads nothing and
        writes nothing; saving it (and deciding again on a conflict) is the caller's."""
        plan = self._plans.plan(request.trigger, request.channels)
        eligible, rejected = self._eligible(plan, snapshot, request, now)
        treated = apply_experiments(eligible, self.catalog, snapshot.state, request.trigger, now)
        zone = (
            ZoneInfo(request.context.time_zone)
            if request.context.time_zone
            else self.catalog.policy.time_zone
        )
        models = self.models.current if self.models is not None else _NO_MODELS
        scored, no_lift = score_candidates(
            treated, now, snapshot=snapshot, request=request, zone=zone, models=models
        )
        contact = ContactLog(self.catalog.policy, snapshot.history, now, zone)
        chosen, lower, held = self._arbitrate(scored, request.max_actions or 1, contact)
        decision_id = new_decision_id()
        cancelled = preemptions(chosen, contact, self.catalog.flows, decision_id)
        return Decision(
            decision_id=decision_id,
            request_id=request.request_id,
            user_id=request.user_id,
            trigger=request.trigger,
            occurred_at=now,
            catalog_version=self.catalog.version,
            actions=tuple([_chosen(c) for c in chosen]),
            rejected=tuple(
                rejected + no_lift + lower
                if not self.catalog.experiments  # nothing held out, no arms
                else rejected
                + no_lift
                + lower
                + [_held_rejection(c, c in held) for c in scored if c.candidate.held_out_by]
            ),
            exposures=()
            if not self.catalog.experiments
            else tuple(_exposures(held, held_out=True) + _exposures(chosen, held_out=False)),
            cancelled=tuple(cancelled),
            models=models.versions,
        )

    def _eligible(  # noqa: PLR0915 - one pass over a plan's actions, every call's hot loop
        self, plan: TriggerPlan, snapshot: CustomerSnapshot, request: DecisionRequest, now: datetime
    ) -> tuple[list[Candidate], list[Rejection]]:
        """Gates, contact checks and rules, in that order: each action is refused by the first that
        fails, or becomes a candidate due after its step's delay. What depends only on the channel (consent,
        suppression), the flow (journey gates, the conflict check) or the class (engagement) is worked out
        once per decision and shared by the actions it concerns."""
        catalog = self.catalog
        state = snapshot.state
        eligible: list[Candidate] = []
        rejected: list[Rejection] = []
        book = JourneyBook(catalog, snapshot, request.trigger, now, self._flow_facts)
        none_ongoing = book.none_ongoing
        scope = RuleScope(state, request, now, plan.scope)
        engagement = catalog.policy.engagement
        blank = not state.channels  # no channel state: the plan's own answers and rejections
        closed = (
            plan.blank_gates
            if blank
            else [
                channel_gate(channel, policy, state, marketing)
                for channel, policy, marketing in plan.channels
            ]
        )
        by_class: dict[ActionClass, Refusal | None] = {}
        for group in plan.flows:
            flow = group.flow
            flow_id = flow.id
            journey: Journey | None = None
            # The flow's own refusal (journey gate), then the conflict check: each worked out when an
            # action of the flow first needs it.
            gated: Refusal | None = None
            conflict: Refusal | None = None
            conflict_known = False
            for p in group.actions:
                action = p.action
                refusal = closed[p.gate]
                if refusal is not None:  # no journey is worked out for a channel the customer is closed on
                    rejected.append(p.blank_refused if blank and p.blank_refused else p.refused(refusal))
                    continue
                if journey is None:
                    journey = book[flow_id]
                    gated = journey_gate(flow_id, journey, group.entry)
                refusal = gated
                if refusal is None and p.checks_stock:
                    refusal = check_inventory(action, request, snapshot.out_of_stock)
                if refusal is None and p.engaged_only:
                    assert engagement is not None
                    cls = action.action_class
                    if cls in by_class:
                        refusal = by_class[cls]
                    else:
                        refusal = by_class[cls] = engagement_failure(cls, engagement, state, now)
                if refusal is None and journey.new and not none_ongoing:  # the conflict check: a new
                    # journey only, and only when some journey can be ongoing (else it finds none)
                    if not conflict_known:
                        conflict, conflict_known = conflict_failure(flow, journey, book), True
                    refusal = conflict
                if refusal is None and p.checks_step:
                    refusal = step_failure(action, flow, journey, snapshot.history, now)
                rule = p.rule
                if refusal is None and p.when is None and rule is not None:
                    # Most actions: a rule and no step condition, answered here; anything but a bool
                    # (an error) is answered again by check_rules, with the original program's text.
                    try:
                        result = rule.program.execute(scope.context(flow_id, journey, rule.uses_journey))
                    except Exception:
                        result = None
                    if result is False and rule.rule is action.rule:
                        refusal = rule.if_false
                    elif result is not True:
                        refusal = check_rules(action, journey, scope, flow=flow_id, when=None, rule=rule)
                elif refusal is None and (p.when is not None or rule is not None):
                    refusal = check_rules(action, journey, scope, flow=flow_id, when=p.when, rule=rule)
                if refusal is not None:
                    rejected.append(rejection(action, refusal.reason, refusal.detail))
                elif action.step is None:
                    eligible.append(
                        Candidate(action, journey, action.channel, action.parameters, action.delay)
                    )
                else:
                    eligible.append(Candidate.of(action, journey, step_delay(action, flow, journey, now)))
        return eligible, rejected

    def _arbitrate(
        self, scored: list[ScoredCandidate], max_actions: int, contact: ContactLog
    ) -> tuple[list[ScoredCandidate], list[Rejection], list[ScoredCandidate]]:
        """Arbitrates as if no one were held out, to learn the counterfactual: the held-out winners are
        what the unit would have received. Then arbitrates what can actually be sent."""
        flows = self.catalog.flows
        first, lower = arbitrate(scored, flows, max_actions, contact, self._ranks)
        if not self.catalog.experiments:  # no one is held out
            return first, lower, []
        held = [c for c in first if c.candidate.held_out_by is not None]
        if not held and not any(c.candidate.held_out_by for c in scored):
            return first, lower, []
        sendable = [c for c in scored if c.candidate.held_out_by is None]
        chosen, lower = arbitrate(sendable, flows, max_actions, contact, self._ranks)
        return chosen, lower, held

    def _replay(
        self, request: DecisionRequest, stored: Decision, stored_fp: str, fingerprint: str
    ) -> Decision:
        if stored_fp != fingerprint:
            raise AlreadyExistsError(
                f"request_id {request.request_id!r} was already used for a different request "
                f"(decision {stored.decision_id}); use a new request_id for a new question"
            )
        return stored if request.explain else _without_explanations(stored)

    def record_events(self, events: Sequence[Event]) -> list[EventResult]:
        """Validates each event on its own, stores the valid ones (deduplicated by ``event_id``) and
        returns one result per event, in order."""
        if len(events) > MAX_EVENTS:
            raise InvalidArgumentError([FieldViolation("events", f"at most {MAX_EVENTS} events per call")])
        results: list[EventResult | None] = [None] * len(events)
        valid: list[tuple[int, Event]] = []
        for index, event in enumerate(events):
            problems = validate_event(event)
            if problems:
                results[index] = EventResult(index, event.event_id, EventOutcome.REJECTED, tuple(problems))
            else:
                valid.append((index, event))
        if valid:
            stripes = sorted({_stripe(e.user_id) for _, e in valid if e.user_id})
            with ExitStack() as stack:  # stripes in a fixed order: no deadlock with each other
                for stripe in stripes:
                    stack.enter_context(self._locks[stripe])
                outcomes = self.store.record_events([e for _, e in valid], self.clock(), self._cancel_rule)
            for (index, event), (outcome, cancelled) in zip(valid, outcomes, strict=True):
                # REJECTED here: the database refused what validation let through (it alone failed).
                refused = (_REFUSED,) if outcome is EventOutcome.REJECTED else ()
                results[index] = EventResult(index, event.event_id, outcome, refused, cancelled)
        return [r for r in results if r is not None]


def _as_saved(decision: Decision, saved: SavedDecision) -> Decision:
    """The decision as written: without the preemptions that someone else cancelled meanwhile."""
    if saved and len(saved.cancelled) != len(decision.cancelled):
        return replace(
            decision, cancelled=tuple(c for c in decision.cancelled if c.exposure_id in saved.cancelled)
        )
    return decision


def _without_explanations(decision: Decision, held_out: bool = True) -> Decision:
    """Without ``explain`` only HELD_OUT stays: it is why a held-out caller gets nothing (``held_out``
    False: the decision cannot hold one, no need to look). Built field by
    field (``dataclasses.replace`` walks the fields' metadata on every call: a few % of a decision);
    ``tests/decision/test_engine.py`` checks that this names every field of ``Decision``."""
    held = ReasonCode.HELD_OUT
    d = decision
    return Decision(
        decision_id=d.decision_id,
        request_id=d.request_id,
        user_id=d.user_id,
        trigger=d.trigger,
        occurred_at=d.occurred_at,
        catalog_version=d.catalog_version,
        actions=d.actions,
        rejected=tuple([r for r in d.rejected if r.reason is held]) if held_out else (),
        replayed=d.replayed,
        exposures=d.exposures,
        cancelled=d.cancelled,
        models=d.models,
    )


def _chosen(c: ScoredCandidate) -> ChosenAction:
    a = c.action
    return ChosenAction(
        a.id,
        a.flow,
        c.channel,
        a.action_class,
        c.send_at,
        c.candidate.parameters,
        c.score,
        c.send_time,
        c.features,
    )


def _held_rejection(c: ScoredCandidate, would_have_won: bool) -> Rejection:
    by = c.candidate.held_out_by
    outcome = "would have been sent" if would_have_won else "would not have been sent anyway"
    detail = (
        f"held out by {by.experiment_id} (arm {by.arm_id}, bucket {by.bucket:.4f}); {outcome}" if by else ""
    )
    return rejection(c.action, ReasonCode.HELD_OUT, detail, c.channel)


def _exposures(candidates: list[ScoredCandidate], *, held_out: bool) -> list[ExperimentExposure]:
    return [
        ExperimentExposure(
            a.experiment_id, a.arm_id, a.bucket, a.hash_version, a.seed, a.probability, held_out, _chosen(c)
        )
        for c in candidates
        for a in c.candidate.assignments
        if a.arm is not None
    ]
