"""The gates stage: hard gates, checked before any rule: suppression, consent, flow exit, journey
membership and inventory.

Consent and suppression come before everything: a suppressed or non-consenting customer gets no marketing
action on that channel whatever else says so. Transactional actions need no marketing consent, and an
unsubscribe does not stop them, but a hard bounce or a complaint on their channel does.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from nextbest.catalog import Action, ChannelPolicy
from nextbest.decision.candidates import Refusal
from nextbest.domain import Channel, DecisionRequest, ReasonCode
from nextbest.state import CustomerState, Journey

__all__ = ["channel_gate", "check_gates", "check_inventory", "journey_gate"]


def _at(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "an unknown time"


def check_gates(
    action: Action,
    policy: ChannelPolicy,
    state: CustomerState,
    journey: Journey,
    entry_trigger: bool,
) -> Refusal | None:
    """The first gate ``action`` fails, or None when it passes them all."""
    return channel_gate(action.channel, policy, state, action.action_class.is_marketing) or journey_gate(
        action.flow, journey, entry_trigger
    )


def channel_gate(
    channel: Channel, policy: ChannelPolicy, state: CustomerState, marketing: bool
) -> Refusal | None:
    """Suppression, then consent, on ``channel``: the same for every action of a class on it."""
    on = state.channel(channel)
    if on.suppression is not None and (marketing or on.suppression.blocks_transactional):
        return Refusal(
            ReasonCode.SUPPRESSED,
            f"{channel.value} suppressed: {on.suppression.value.replace('_', ' ')} "
            f"at {_at(on.suppressed_at)}",
        )
    if marketing and policy.requires_consent:
        consent = on.consent if on.consent is not None else policy.default_consent
        if not consent:
            if on.consent is not False:
                return _NEVER_GIVEN[channel]
            return Refusal(
                ReasonCode.NO_CONSENT, f"no {channel.value} consent: revoked at {_at(on.consent_at)}"
            )
    return None


# The refusal of most closed channels, built once: consent never given.
_NEVER_GIVEN = {c: Refusal(ReasonCode.NO_CONSENT, f"no {c.value} consent: never given") for c in Channel}


def journey_gate(flow: str, journey: Journey, entry_trigger: bool) -> Refusal | None:
    """Re-entry window, flow exit, journey membership: the same for every action of the flow."""
    if journey.blocked_until is not None:
        return Refusal(
            ReasonCode.COOLDOWN,
            f"{flow} re-entry window: entered at {_at(journey.entered_at)}, "
            f"no new journey before {_at(journey.blocked_until)}",
        )
    if journey.exit_event is not None:
        return Refusal(
            ReasonCode.EXITED_FLOW,
            f"left {flow}: {journey.exit_event.value} at {_at(journey.exited_at)} "
            f"after entering at {_at(journey.entered_at)}",
        )
    if not entry_trigger and not journey.active:
        if journey.entered_at is not None:
            return Refusal(
                ReasonCode.NOT_IN_JOURNEY,
                f"the {flow} journey entered at {_at(journey.entered_at)} ended at {_at(journey.ends_at)}",
            )
        return Refusal(ReasonCode.NOT_IN_JOURNEY, f"a follow-up step, and the customer is not in {flow}")
    return None


def check_inventory(
    action: Action, request: DecisionRequest, out_of_stock: Collection[str]
) -> Refusal | None:
    """An ``inventory: in_stock`` action is refused when a product the request names is out of stock, as
    the request says or as the latest inventory events recorded."""
    if action.inventory != "in_stock" or not request.context.product_ids:
        return None
    told = set(request.context.out_of_stock_product_ids)
    out = [p for p in request.context.product_ids if p in told or p in out_of_stock]
    if out:
        return Refusal(ReasonCode.OUT_OF_STOCK, f"out of stock: {', '.join(sorted(set(out)))}")
    return None
