"""The contact stage: every contact-policy check.

Before experiments, on the candidate alone (``engagement_failure``, ``conflict_failure``,
``step_failure``; the engine shares each result among the actions it concerns): engagement suppression,
the conflict check (a customer mid-journey in a higher-priority flow is not entered into a lower one),
flow steps and cooldowns. At the send time arbitration picks, against what else is chosen
(``check_at``): quiet hours (defer or refuse) and exact rolling-window frequency caps. After arbitration
(``preemptions``): the pending actions the winners outrank on their channel are cancelled. And what
cancels a pending action when an event arrives (``cancel_reason``): an exit event of its flow, an
unsubscribe, a consent withdrawal, a complaint or a hard bounce.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from nextbest.catalog import Action, Cap, Catalog, ContactPolicy, Engagement, Flow, QuietHours
from nextbest.decision.candidates import Refusal, rejection
from nextbest.decision.journeys import JourneyBook, step_delay
from nextbest.decision.scoring import ScoredCandidate
from nextbest.domain import (
    ActionClass,
    BounceKind,
    Cancellation,
    Event,
    EventType,
    ReasonCode,
    Rejection,
)
from nextbest.state import MESSAGING_CHANNELS, CustomerState, Journey, PastExposure

__all__ = [
    "CapViolation",
    "ContactLog",
    "cancel_reason",
    "cap_violation",
    "check_at",
    "conflict_failure",
    "defer_for_quiet_hours",
    "engagement_failure",
    "preemptions",
    "step_failure",
]


def _at(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "never"


def engagement_failure(
    action_class: ActionClass, engagement: Engagement, state: CustomerState, now: datetime
) -> Refusal | None:
    """Engagement suppression for a class the policy's engagement rule covers (the same for every
    action of the class): known for the whole window, and no open or click in it."""
    since = now - engagement.window
    known = state.first_seen_at is not None and state.first_seen_at <= since
    if known and (state.last_engagement_at is None or state.last_engagement_at < since):
        days = engagement.window.total_seconds() / 86400
        return Refusal(
            ReasonCode.UNENGAGED,
            f"no opens or clicks in the last {days:g} days (last engagement: "
            f"{_at(state.last_engagement_at)}); {action_class.value} actions stop",
        )
    return None


def conflict_failure(flow: Flow, journey: Journey, book: JourneyBook) -> Refusal | None:
    """The conflict check (the same for every action of the flow): a new journey is not started while
    the customer is mid-journey in a flow that outranks it."""
    if journey.new and flow.is_journey:
        higher = book.higher_journey(flow)
        if higher is not None:
            other, theirs = higher
            return Refusal(
                ReasonCode.IN_HIGHER_JOURNEY,
                f"mid-journey in {other.id} ({other.action_class.value}, priority {other.priority}, "
                f"entered at {_at(theirs.entered_at)}); not entered into {flow.id} "
                f"({flow.action_class.value}, priority {flow.priority})",
            )
    return None


def step_failure(
    action: Action, flow: Flow, journey: Journey, history: Sequence[PastExposure], now: datetime
) -> Refusal | None:
    """The action's own checks: its flow step is due, and its cooldown has passed."""
    if action.step is not None:
        failure = _step_failure(action, flow, journey, now)
        if failure is not None:
            return failure
    if action.cooldown:
        at = now + step_delay(action, flow, journey, now)
        for p in history:
            if p.action_id == action.id and not p.cancelled and abs(p.send_at - at) < action.cooldown:
                return Refusal(
                    ReasonCode.COOLDOWN,
                    f"{action.id} was sent for {_at(p.send_at)}; cooldown "
                    f"{action.cooldown.total_seconds() / 86400:g} days",
                )
    return None


def _step_failure(action: Action, flow: Flow, journey: Journey, now: datetime) -> Refusal | None:
    index = action.step
    assert index is not None and journey.entered_at is not None
    if index in journey.steps_done:
        return Refusal(ReasonCode.NOT_DUE, f"step {index + 1} of {flow.id} was already sent in this journey")
    if journey.last_step > index:
        return Refusal(
            ReasonCode.NOT_DUE,
            f"step {index + 1} of {flow.id} was passed: step {journey.last_step + 1} was sent",
        )
    due = journey.entered_at + flow.steps[index].after
    if index > 0 and now < due:
        return Refusal(ReasonCode.NOT_DUE, f"step {index + 1} of {flow.id} is due at {_at(due)}")
    later = [s for s in flow.steps[index + 1 :] if journey.entered_at + s.after <= now]
    if later:
        return Refusal(
            ReasonCode.NOT_DUE, f"step {index + 1} of {flow.id} was passed: step {later[-1].index + 1} is due"
        )
    return None


@dataclass(frozen=True, slots=True, init=False)
class ContactLog:
    """What the send-time policy needs: the customer's contact history (newest first), the decision's
    time and the customer's time zone."""

    policy: ContactPolicy
    history: Sequence[PastExposure]
    now: datetime
    zone: ZoneInfo

    # By hand, each slot through its own descriptor (one per decision; see ``Decision.__init__``).
    def __init__(
        self, policy: ContactPolicy, history: Sequence[PastExposure], now: datetime, zone: ZoneInfo
    ) -> None:
        _set_policy(self, policy)
        _set_history(self, history)
        _set_now(self, now)
        _set_zone(self, zone)

    def preempted_by(self, candidate: ScoredCandidate, flows: Mapping[str, Flow]) -> list[PastExposure]:
        """Pending actions on the candidate's channel that it outranks: it cancels them if it wins."""
        if not self.history:
            return []
        mine = _priority(candidate.action.action_class, candidate.action.flow, flows)
        return [
            p
            for p in self.history
            if p.channel == candidate.channel
            and p.pending(self.now)
            and _priority(p.action_class, p.flow, flows) > mine
        ]


# The slots' own setters, for ``ContactLog.__init__``.
_set_policy = vars(ContactLog)["policy"].__set__
_set_history = vars(ContactLog)["history"].__set__
_set_now = vars(ContactLog)["now"].__set__
_set_zone = vars(ContactLog)["zone"].__set__


def _priority(action_class: ActionClass, flow: str, flows: Mapping[str, Flow]) -> tuple[int, int]:
    """What preemption compares: class, then the flow's declared priority (smaller is more important)."""
    known = flows.get(flow)
    return (action_class.rank, -known.priority if known is not None else 0)


def check_at(
    candidate: ScoredCandidate,
    send_at: datetime,
    contact: ContactLog,
    chosen: list[ScoredCandidate],
    flows: Mapping[str, Flow],
    *,
    defer: bool,
) -> ScoredCandidate | Rejection:
    """The candidate at ``send_at`` (deferred past quiet hours when ``defer`` and the send window
    allows), or why quiet hours or a frequency cap refuse it. Caps count what was sent, what is
    pending (less what this candidate would preempt) and what this decision already chose."""
    action, channel = candidate.action, candidate.channel
    quiet = contact.policy.quiet_hours.get(channel)
    if quiet is not None and quiet.applies(action.action_class):
        deferred, quiet_end = defer_for_quiet_hours(send_at, quiet, contact.zone, action.send_window)
        if not defer and deferred != send_at:
            return rejection(action, ReasonCode.QUIET_HOURS, "inside quiet hours", channel)
        if deferred is None:
            return rejection(
                action,
                ReasonCode.QUIET_HOURS,
                f"{channel} quiet hours {quiet.describe()} ({contact.zone.key}) until "
                f"{quiet_end:%Y-%m-%d %H:%M}Z; the send window is "
                f"{action.send_window.total_seconds() / 3600:g}h",
                channel,
            )
        send_at = deferred
    caps = [c for c in contact.policy.caps if c.applies(action.action_class, channel)]
    if caps:
        preempted = {p.exposure_id for p in contact.preempted_by(candidate, flows)}
        for cap in caps:
            sends = [
                p.send_at
                for p in contact.history
                if not p.cancelled
                and p.exposure_id not in preempted
                and cap.applies(p.action_class, p.channel)
            ]
            sends += [c.send_at for c in chosen if cap.applies(c.action.action_class, c.channel)]
            violation = cap_violation(sends, send_at, cap)
            if violation is not None:
                return rejection(action, ReasonCode.FREQUENCY_CAP, violation.detail(), channel)
    return candidate if send_at == candidate.send_at else replace(candidate, send_at=send_at)


def preemptions(
    chosen: Sequence[ScoredCandidate], contact: ContactLog, flows: Mapping[str, Flow], decision_id: str
) -> list[Cancellation]:
    """The pending actions the winners cancel, each once."""
    out: dict[int, Cancellation] = {}
    for winner in chosen:
        for p in contact.preempted_by(winner, flows):
            out.setdefault(
                p.exposure_id,
                p.cancellation(
                    f"preempted by {winner.action.id} ({winner.action.action_class.value}, "
                    f"{winner.action.flow}) in decision {decision_id}"
                ),
            )
    return list(out.values())


def cancel_reason(catalog: Catalog, event: Event, pending: PastExposure) -> str | None:
    """Why ``event`` ends the pending action, if it does: an exit event of its flow; an unsubscribe,
    a consent withdrawal (marketing); a complaint or a hard bounce on its channel (everything)."""
    kind, channel = event.type, pending.channel
    flow = catalog.flows.get(pending.flow)
    if kind is None:
        return None
    if flow is not None and kind in flow.exit_on:
        return f"{kind.value} at {event.occurred_at:%Y-%m-%d %H:%M}Z exits {pending.flow}"
    marketing = pending.action_class.is_marketing
    unsubscribed = event.channel == channel or (event.channel is None and channel in MESSAGING_CHANNELS)
    if kind is EventType.UNSUBSCRIBED and marketing and unsubscribed:
        return f"unsubscribed from {channel.value}"
    if (
        kind is EventType.CONSENT_CHANGED
        and marketing
        and not event.consent_granted
        and event.channel == channel
    ):
        policy = catalog.channels.get(channel)
        if policy is None or policy.requires_consent:
            return f"{channel.value} consent withdrawn"
    if kind is EventType.COMPLAINED and event.channel == channel:
        return f"complaint on {channel.value}"
    if kind is EventType.BOUNCED and event.channel == channel and event.bounce_kind is BounceKind.HARD:
        return f"hard bounce on {channel.value}"
    return None


@dataclass(frozen=True, slots=True)
class CapViolation:
    cap: Cap
    count: int  # sends already in the fullest window that the new send would join
    since: datetime  # the first of them

    def detail(self) -> str:
        return (
            f"{self.cap.describe()} reached: {self.count} send{'s' if self.count != 1 else ''} "
            f"since {self.since:%Y-%m-%d %H:%M}Z"
        )


def cap_violation(sends: Iterable[datetime], at: datetime, cap: Cap) -> CapViolation | None:
    """Whether a send at ``at`` would put more than ``cap.limit`` sends in some window ``[a, a + W)``.

    Exact, not a fixed calendar bucket: only windows containing ``at`` change, and the fullest of them
    starts at ``at`` or at one of the existing sends in ``(at - W, at]``."""
    w = cap.window
    near = sorted(s for s in sends if at - w < s < at + w)
    if len(near) < cap.limit:
        return None
    for start in [s for s in near if s <= at] + [at]:
        inside = [s for s in near if start <= s < start + w]
        if len(inside) + 1 > cap.limit:
            return CapViolation(cap, len(inside), inside[0])
    return None


def defer_for_quiet_hours(
    at: datetime, quiet: QuietHours, zone: ZoneInfo, send_window: timedelta
) -> tuple[datetime | None, datetime | None]:
    """``(send_at, quiet_end)``: ``at`` itself when outside quiet hours; the end of the quiet period
    when that is within ``send_window`` of ``at``; ``(None, quiet_end)`` when the action cannot wait."""
    end = quiet.end_of_quiet(at.astimezone(zone))
    if end is None:
        return at, None
    end_utc = end.astimezone(at.tzinfo)
    if end_utc - at <= send_window:
        return end_utc, end_utc
    return None, end_utc
