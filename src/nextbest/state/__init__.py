"""Customer state: consent, suppression, purchase aggregates, contact history and journeys."""

from nextbest.state.customer import (
    MESSAGING_CHANNELS,
    ChannelState,
    CustomerState,
    Suppression,
    apply_event,
    hour_of_week,
)
from nextbest.state.history import CustomerSnapshot, Journey, PastExposure, journey_in

__all__ = [
    "MESSAGING_CHANNELS",
    "ChannelState",
    "CustomerSnapshot",
    "CustomerState",
    "Journey",
    "PastExposure",
    "Suppression",
    "apply_event",
    "hour_of_week",
    "journey_in",
]
