"""What the customer was sent before, and where they are in each flow's journey."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from nextbest.domain import ActionClass, Cancellation, Channel, Event, EventType
from nextbest.state.customer import CustomerState

__all__ = ["CancelRule", "CustomerSnapshot", "Journey", "PastExposure"]


@dataclass(frozen=True, slots=True)
class PastExposure:
    """One action chosen for the customer by an earlier decision. It is pending until ``send_at``; a
    cancelled one (preempted, or its flow exited) was never sent and counts for nothing."""

    decision_id: str
    action_id: str
    flow: str
    channel: Channel
    action_class: ActionClass
    trigger: str
    occurred_at: datetime
    send_at: datetime
    exposure_id: int = 0
    cancelled: bool = False

    def pending(self, now: datetime) -> bool:
        return not self.cancelled and self.send_at > now

    def cancellation(self, reason: str) -> Cancellation:
        """This pending action, cancelled for ``reason``."""
        return Cancellation(
            self.decision_id,
            self.action_id,
            self.flow,
            self.channel,
            self.action_class,
            self.send_at,
            reason,
            self.exposure_id,
        )


@dataclass(frozen=True, slots=True)
class CustomerSnapshot:
    """Everything the pipeline knows about a customer at decision time. ``history`` is newest first."""

    state: CustomerState
    history: Sequence[PastExposure] = ()
    # Products the latest inventory events mark out of stock, among those the request names.
    out_of_stock: frozenset[str] = frozenset()
    # The customer row's version when it was read (0: no row yet); a decision that acts on this snapshot
    # commits only while the version is unchanged.
    version: int = 0


@dataclass(frozen=True, slots=True, init=False)
class Journey:
    """The customer's journey in one flow. ``new`` when this decision's trigger starts it; ``blocked_until``
    when an entry trigger came inside the re-entry window of a journey that has ended."""

    active: bool
    entered_at: datetime | None = None
    steps_sent: int = 0
    exit_event: EventType | None = None
    exited_at: datetime | None = None
    new: bool = False
    steps_done: frozenset[int] = frozenset()
    ends_at: datetime | None = None
    blocked_until: datetime | None = None

    # Written by hand (``init=False``), the generated one's parameters and defaults, each slot set through
    # its own descriptor: a frozen dataclass's generated __init__ goes through ``object.__setattr__`` per
    # field, twice as slow, and a decision builds a journey for each flow its trigger enters.
    def __init__(  # noqa: PLR0917 - positional, as the generated __init__ takes them
        self,
        active: bool,
        entered_at: datetime | None = None,
        steps_sent: int = 0,
        exit_event: EventType | None = None,
        exited_at: datetime | None = None,
        new: bool = False,
        steps_done: frozenset[int] = frozenset(),
        ends_at: datetime | None = None,
        blocked_until: datetime | None = None,
    ) -> None:
        _j_active(self, active)
        _j_entered_at(self, entered_at)
        _j_steps_sent(self, steps_sent)
        _j_exit_event(self, exit_event)
        _j_exited_at(self, exited_at)
        _j_new(self, new)
        _j_steps_done(self, steps_done)
        _j_ends_at(self, ends_at)
        _j_blocked_until(self, blocked_until)

    def hours_since_entry(self, now: datetime) -> float:
        return (now - self.entered_at).total_seconds() / 3600 if self.entered_at else -1.0

    @property
    def last_step(self) -> int:
        return max(self.steps_done, default=-1)


# The slots' own setters, for ``Journey.__init__``.
_j_active = vars(Journey)["active"].__set__
_j_entered_at = vars(Journey)["entered_at"].__set__
_j_steps_sent = vars(Journey)["steps_sent"].__set__
_j_exit_event = vars(Journey)["exit_event"].__set__
_j_exited_at = vars(Journey)["exited_at"].__set__
_j_new = vars(Journey)["new"].__set__
_j_steps_done = vars(Journey)["steps_done"].__set__
_j_ends_at = vars(Journey)["ends_at"].__set__
_j_blocked_until = vars(Journey)["blocked_until"].__set__


# Why an event ends a pending action, or None when it does not (``nextbest.decision.contact.cancel_reason``).
CancelRule = Callable[[Event, PastExposure], str | None]
