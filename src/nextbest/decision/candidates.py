"""The candidates stage: the catalog's actions that answer the trigger on an allowed channel, and the
shapes every later stage passes along (a candidate, a refusal with its reason, a rejection)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Literal, NamedTuple

from nextbest.catalog import Action, Catalog
from nextbest.domain import ActionClass, Channel, ReasonCode, Rejection
from nextbest.experiments import Assignment
from nextbest.state import Journey

__all__ = ["Candidate", "Refusal", "candidates_for", "new_rejection", "rejection"]


def candidates_for(catalog: Catalog, trigger: str, channels: Sequence[Channel]) -> list[Action]:
    """Actions answering ``trigger`` on one of ``channels`` (every enabled channel when empty)."""
    allowed = set(channels) if channels else set(catalog.channels)
    return [a for a in catalog.actions_for(trigger) if a.channel in allowed]


class Refusal(NamedTuple):
    """Why a stage turned a candidate away: the reason code and a sentence for ``explain``."""

    reason: ReasonCode
    detail: str


@dataclass(
    slots=True
)  # not frozen: built for every eligible action of every decision, and frozen init is slow
class Candidate:
    """An eligible action as it would be sent: an experiment arm may change its channel, delay and
    parameters, or hold it out (the unit gets nothing in the experiment's scope).

    When an arm moved the channel or the delay, ``declared`` is the channel and delay the action had
    before (scoring ranks on them) and ``variants`` the channel and delay of every arm of the experiments
    that move it (arbitration admits the candidate only if every arm's version passes the contact
    policy): whether a unit gets the action must not depend on its arm.

    When an arm sets the send time, ``send_time`` is it (else the action's own applies) and
    ``send_times`` every arm's, so that the send-time stage admits the action only if each would send
    it."""

    action: Action
    journey: Journey
    channel: Channel
    parameters: Mapping[str, str]
    delay: timedelta
    assignments: tuple[Assignment, ...] = ()
    held_out_by: Assignment | None = None
    declared: tuple[Channel, timedelta] | None = None
    variants: tuple[tuple[Channel, timedelta], ...] = ()
    send_time: Literal["fixed", "optimize"] | None = None
    send_times: tuple[Literal["fixed", "optimize"], ...] = ()

    @property
    def optimizes(self) -> bool:
        """Whether it is sent at the customer's best hour: its arm's send time, else the action's."""
        return (self.send_time or self.action.send_time) == "optimize"

    @classmethod
    def of(cls, action: Action, journey: Journey, delay: timedelta | None = None) -> Candidate:
        return cls(
            action, journey, action.channel, action.parameters, action.delay if delay is None else delay
        )


def rejection(action: Action, reason: ReasonCode, detail: str, channel: Channel | None = None) -> Rejection:
    return new_rejection(
        (action.id, action.flow, channel or action.channel, action.action_class, reason, detail)
    )


# ``Rejection(*fields)`` without the named tuple's ``__new__`` (a Python function): the same tuple, built
# in C, a fifth of the cost (a decision makes one per refused candidate). ``fields`` in ``Rejection``'s order.
new_rejection: Callable[[tuple[str, str, Channel, ActionClass, ReasonCode, str]], Rejection] = partial(
    tuple.__new__, Rejection
)
