"""Customer state: consent, suppression, purchase aggregates, contact history and journeys."""

from nextbest.state.customer import (
    MESSAGING_CHANNELS,
    ChannelState,
    CustomerState,
    Suppression,
    apply_event,
    fold_events,
    hour_of_week,
)
from nextbest.state.history import CancelRule, CustomerSnapshot, Journey, PastExposure

__all__ = [
    "MESSAGING_CHANNELS",
    "CancelRule",
    "ChannelState",
    "CustomerSnapshot",
    "CustomerState",
    "Journey",
    "PastExposure",
    "Suppression",
    "apply_event",
    "fold_events",
    "hour_of_week",
]
