"""The send-time stage: when to send a winner. With the customer's engagement profile (actions that
optimize their send time, when a send-time model is loaded) the best hour of the send window that quiet
hours and caps allow; otherwise when due, deferred past quiet hours. Say whether the hour is personal, the
population's or a fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from nextbest.catalog import Flow
from nextbest.decision.candidates import rejection
from nextbest.decision.contact import ContactLog, check_at
from nextbest.decision.scoring import ScoredCandidate
from nextbest.domain import Rejection, SendTimeSource

__all__ = ["schedule"]


def schedule(
    candidate: ScoredCandidate, contact: ContactLog, chosen: list[ScoredCandidate], flows: Mapping[str, Flow]
) -> ScoredCandidate | Rejection:
    """The candidate at the first send time the contact policy allows, or why it cannot be sent. An
    action an experiment moves to another channel, delay or send time must pass as every arm would send
    it."""
    checked = _best_time(candidate, contact, chosen, flows)
    if isinstance(checked, Rejection):
        return checked
    refused = _refused_in_another_arm(candidate, contact, chosen, flows)
    if refused is None:
        refused = _refused_when_due(candidate, contact, chosen, flows)
    return checked if refused is None else refused


def _refused_when_due(
    candidate: ScoredCandidate, contact: ContactLog, chosen: list[ScoredCandidate], flows: Mapping[str, Flow]
) -> Rejection | None:
    """The refusal of a candidate sent at the customer's best hour, had another arm of its experiment
    sent it when due (a fixed hour). The reverse needs no check: an arm that optimizes falls back to when
    due, so it sends whatever the fixed arm would."""
    own = candidate.candidate
    if candidate.timing is None or "fixed" not in own.send_times:
        return None
    checked = _best_time(replace(candidate, timing=None), contact, chosen, flows)
    if isinstance(checked, Rejection):
        return rejection(
            candidate.action,
            checked.reason,
            f"as another arm of its experiment sends it (when due): {checked.detail}",
            own.channel,
        )
    return None


def _best_time(
    candidate: ScoredCandidate, contact: ContactLog, chosen: list[ScoredCandidate], flows: Mapping[str, Flow]
) -> ScoredCandidate | Rejection:
    """The candidate at the first send time the policy allows: with a send-time profile, the best hour
    of the send window outside quiet hours and caps; otherwise when due (deferred past quiet hours)."""
    if candidate.timing is not None:
        for slot in candidate.timing.slots(candidate.send_at, candidate.action.send_window):
            checked = check_at(candidate, slot, contact, chosen, flows, defer=False)
            if not isinstance(checked, Rejection):
                return checked
        # No hour of the window passes: when due, like an action without a profile.
        candidate = replace(candidate, timing=None, send_time=SendTimeSource.FALLBACK)
    return check_at(candidate, candidate.send_at, contact, chosen, flows, defer=True)


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
        checked = _best_time(other, contact, chosen, flows)
        if isinstance(checked, Rejection):
            return rejection(
                candidate.action,
                checked.reason,
                f"as another arm of its experiment sends it ({channel}, after {delay}): {checked.detail}",
                own.channel,
            )
    return None
