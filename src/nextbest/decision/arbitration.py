"""Arbitration: a priority queue by class, then score, then flow priority; one action per channel, at
most ``max_actions`` in total, and the send-time contact policy — quiet hours (defer or reject) and
frequency caps counted over what was sent, what is pending and what this decision already chose.
Winners preempt lower-priority pending actions on their channel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from nextbest.catalog import Flow
from nextbest.domain import ActionClass, Cancellation, Channel, ReasonCode, Rejection, SendTimeSource
from nextbest.eligibility import rejection
from nextbest.policy import ContactPolicy, cap_violation, defer_for_quiet_hours
from nextbest.scoring import ScoredCandidate
from nextbest.state import PastExposure

__all__ = ["ContactLog", "arbitrate", "preemptions", "rank_key"]


def rank_key(candidate: ScoredCandidate, flows: Mapping[str, Flow]) -> tuple[int, float, int, str]:
    """Sort key: transactional before triggered before promotional; then higher score, then higher flow
    priority; the action id breaks ties so the order is deterministic."""
    action = candidate.action
    return (action.action_class.rank, -candidate.score, -flows[action.flow].priority, action.id)


def _priority(action_class: ActionClass, flow: str, flows: Mapping[str, Flow]) -> tuple[int, int]:
    """What preemption compares: class, then the flow's declared priority (smaller is more important)."""
    known = flows.get(flow)
    return (action_class.rank, -known.priority if known is not None else 0)


@dataclass(frozen=True)
class ContactLog:
    """What the send-time policy needs: the customer's contact history (newest first), the decision's
    time and the customer's time zone."""

    policy: ContactPolicy
    history: Sequence[PastExposure]
    now: datetime
    zone: ZoneInfo

    def preempted_by(self, candidate: ScoredCandidate, flows: Mapping[str, Flow]) -> list[PastExposure]:
        """Pending actions on the candidate's channel that it outranks: it cancels them if it wins."""
        mine = _priority(candidate.action.action_class, candidate.action.flow, flows)
        return [
            p
            for p in self.history
            if p.channel == candidate.channel
            and p.pending(self.now)
            and _priority(p.action_class, p.flow, flows) > mine
        ]


def arbitrate(
    candidates: list[ScoredCandidate],
    flows: Mapping[str, Flow],
    max_actions: int,
    contact: ContactLog | None = None,
) -> tuple[list[ScoredCandidate], list[Rejection]]:
    """The winners, highest ranked first (``send_at`` moved past quiet hours where needed), and why
    each other candidate lost."""
    chosen: list[ScoredCandidate] = []
    rejected: list[Rejection] = []
    taken: dict[Channel, ScoredCandidate] = {}
    for candidate in sorted(candidates, key=lambda c: rank_key(c, flows)):
        action, channel = candidate.action, candidate.channel
        # An action an experiment moves between channels needs every arm's channel free: which arm the
        # unit is in must not decide whether it gets the action.
        channels = [channel, *(ch for ch, _ in candidate.candidate.variants if ch is not channel)]
        busy = next((ch for ch in channels if ch in taken), None)
        if busy is not None:
            winner = taken[busy]
            arm = "" if busy is channel else f" (another arm of its experiment sends it on {busy})"
            rejected.append(
                rejection(
                    action,
                    ReasonCode.LOWER_PRIORITY,
                    f"{busy} already taken by {winner.action.id} "
                    f"({winner.action.action_class}, score {winner.score:.4g}){arm}",
                    channel,
                )
            )
            continue
        if len(chosen) >= max_actions:
            rejected.append(
                rejection(
                    action, ReasonCode.MAX_ACTIONS, f"max_actions={max_actions} already chosen", channel
                )
            )
            continue
        winner = candidate
        if contact is not None:
            checked = _send_time_policy(candidate, contact, chosen, flows)
            if isinstance(checked, Rejection):
                rejected.append(checked)
                continue
            refused = _refused_in_another_arm(candidate, contact, chosen, flows)
            if refused is not None:
                rejected.append(refused)
                continue
            winner = checked
        for ch in channels:
            taken[ch] = winner
        chosen.append(winner)
    return chosen, rejected


def _refused_in_another_arm(
    candidate: ScoredCandidate, contact: ContactLog, chosen: list[ScoredCandidate], flows: Mapping[str, Flow]
) -> Rejection | None:
    """The send-time policy's refusal of the candidate as another arm of its experiment would send it
    (another channel or delay), if any arm's version is refused."""
    own = candidate.candidate
    for channel, delay in own.variants:
        if (channel, delay) == (own.channel, own.delay):
            continue
        other = replace(
            candidate,
            candidate=replace(own, channel=channel, delay=delay, variants=()),
            send_at=candidate.send_at - own.delay + delay,
        )
        checked = _send_time_policy(other, contact, chosen, flows)
        if isinstance(checked, Rejection):
            return rejection(
                candidate.action,
                checked.reason,
                f"as another arm of its experiment sends it ({channel}, after {delay}): {checked.detail}",
                own.channel,
            )
    return None


def _send_time_policy(
    candidate: ScoredCandidate, contact: ContactLog, chosen: list[ScoredCandidate], flows: Mapping[str, Flow]
) -> ScoredCandidate | Rejection:
    """The candidate at the first send time the policy allows: with a send-time profile, the best hour
    of the send window outside quiet hours and caps; otherwise when due (deferred past quiet hours)."""
    if candidate.timing is not None:
        for slot in candidate.timing.slots(candidate.send_at, candidate.action.send_window):
            checked = _policy_at(candidate, slot, contact, chosen, flows, defer=False)
            if not isinstance(checked, Rejection):
                return checked
        # No hour of the window passes: when due, like an action without a profile.
        candidate = replace(candidate, timing=None, send_time=SendTimeSource.FALLBACK)
    return _policy_at(candidate, candidate.send_at, contact, chosen, flows, defer=True)


def _policy_at(
    candidate: ScoredCandidate,
    send_at: datetime,
    contact: ContactLog,
    chosen: list[ScoredCandidate],
    flows: Mapping[str, Flow],
    *,
    defer: bool,
) -> ScoredCandidate | Rejection:
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
                Cancellation(
                    p.decision_id,
                    p.action_id,
                    p.flow,
                    p.channel,
                    p.action_class,
                    p.send_at,
                    f"preempted by {winner.action.id} ({winner.action.action_class.value}, "
                    f"{winner.action.flow}) in decision {decision_id}",
                    p.exposure_id,
                ),
            )
    return list(out.values())
