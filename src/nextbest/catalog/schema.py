"""The catalog file's schema: strict pydantic models that reject unknown keys."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from nextbest.domain import ActionClass, Channel, EventType

__all__ = [
    "ActionSpec",
    "ArmSpec",
    "CapSpec",
    "CatalogSpec",
    "ChannelSpec",
    "EngagementSpec",
    "ExperimentSpec",
    "FlowSpec",
    "NamespaceSpec",
    "PolicySpec",
    "QuietHoursSpec",
    "ScopeSpec",
    "StepSpec",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_IDENT = r"^[a-z][a-z0-9_]{0,63}$"


def parse_duration(value: object) -> timedelta:
    """``"90m"``, ``"1h"``, ``"2d"``, ``"1w"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration such as '1h', '30m' or '2d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration such as '1h', '30m' or '2d'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Identifier = Annotated[str, Field(pattern=_IDENT)]
ParameterValue = str | bool | int | float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ChannelSpec(_Strict):
    requires_consent: bool = Field(
        default=True, description="Marketing actions need the customer's consent on this channel."
    )
    default_consent: bool = Field(
        default=False, description="Consent assumed when the customer never said (opt-out regimes)."
    )


class StepSpec(_Strict):
    """One step of a multi-step flow: its actions become due ``after`` the journey's entry, when ``when``
    holds. The first step is scheduled at entry (``send_at`` = entry + after); a later step is decided
    once it is due, on a later trigger or a ``scheduled`` call."""

    after: Duration = Field(default=timedelta(0), description="Time after the journey's entry.")
    actions: list[Identifier] = Field(min_length=1)
    when: str = Field(default="true", min_length=1, description="CEL condition, checked when due.")


class FlowSpec(_Strict):
    description: str = ""
    priority: int = Field(default=50, ge=0, le=1000, description="Higher wins within a class.")
    entry_triggers: list[Identifier] | None = Field(
        default=None,
        description="Triggers that start a journey in this flow; default: every trigger its actions answer.",
    )
    exit_on: list[EventType] = Field(
        default_factory=list, description="Events that end the journey, e.g. order_placed."
    )
    reentry: Duration = Field(
        default=timedelta(0),
        description="An entry trigger within this time of the journey's start continues it, not a new one.",
    )
    duration: Duration | None = Field(
        default=None,
        description="How long a journey stays open after entry; default: the last step's time + 1 day, "
        "or 7 days for a flow without steps.",
    )
    steps: list[StepSpec] = Field(default_factory=list)


class ActionSpec(_Strict):
    id: Identifier
    description: str = ""
    flow: Identifier
    channel: Channel
    action_class: ActionClass = Field(alias="class")
    triggers: list[Identifier] = Field(min_length=1)
    rule: str = Field(default="true", min_length=1, description="CEL expression returning bool.")
    delay: Duration = Field(default=timedelta(0), description="send_at = trigger time + delay.")
    value: float = Field(default=0.0, ge=0, description="Expected order value if the action converts.")
    value_from: Literal["cart_value", "average_order"] | None = Field(
        default=None,
        description="cart_value: the order at stake is the request's cart (context.cart_value); "
        "average_order: the customer's average order so far (revenue over orders). value is used "
        "when a request carries no cart, or a customer has no order yet.",
    )
    base_propensity: float = Field(
        default=0.01, ge=0, le=1, description="P(convert) used when no model scores the action."
    )
    cost: float = Field(default=0.0, ge=0, description="Cost per send.")
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    discount_parameter: Identifier | None = Field(
        default=None,
        description="The parameter holding the percent off the order this action gives (0-100). "
        "Scoring charges it on every order the action touches, including those that would have "
        "happened anyway. Scoring reads the declared discount, also for a unit in an experiment arm "
        "that overrides it, so that the arms face the same decision to send.",
    )
    cooldown: Duration = Field(
        default=timedelta(0), description="The same action is not sent again within this time."
    )
    send_window: Duration = Field(
        default=timedelta(hours=12),
        description="How long quiet hours may defer the send; beyond it the action is rejected.",
    )
    send_time: Literal["fixed", "optimize"] = Field(
        default="fixed",
        description="optimize: send at the customer's best hour inside the send window (send-time model).",
    )
    inventory: Literal["ignore", "in_stock"] = Field(
        default="ignore",
        description="in_stock: rejected (OUT_OF_STOCK) when a product of the context is out of stock.",
    )


class ArmSpec(_Strict):
    id: Identifier
    weight: float = Field(gt=0, le=1, description="Share of the experiment's units; weights sum to 1.")
    no_action: bool = Field(
        default=False, description="Control or holdout: the unit gets no action in the experiment's scope."
    )
    parameters: dict[str, ParameterValue] = Field(
        default_factory=dict, description="Overrides of the action's parameters (discount, template, ...)."
    )
    delay: Duration | None = Field(default=None, description="Overrides the action's delay.")
    channel: Channel | None = Field(default=None, description="Moves the action to another channel.")
    send_time: Literal["fixed", "optimize"] | None = Field(
        default=None,
        description="Overrides the action's send_time: optimize (the customer's best hour in the send "
        "window) or fixed (when due). Compares a send-time model against a fixed hour.",
    )


class ScopeSpec(_Strict):
    """Which candidates an experiment applies to; empty lists mean any. Transactional actions never are."""

    flows: list[Identifier] = Field(default_factory=list)
    actions: list[Identifier] = Field(default_factory=list)
    classes: list[ActionClass] = Field(default_factory=list)


class NamespaceSpec(_Strict):
    """Experiments in one namespace with disjoint ranges never share a unit."""

    id: Annotated[str, Field(min_length=1, max_length=64)]
    start: float = Field(ge=0, le=1)
    end: float = Field(ge=0, le=1)


class ExperimentSpec(_Strict):
    id: Identifier
    description: str = ""
    seed: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="Hash seed; defaults to the id. A new seed restarts the experiment."
    )
    hash_version: Literal[1, 2] = 2
    scope: ScopeSpec = Field(default_factory=ScopeSpec)
    arms: list[ArmSpec] = Field(min_length=2)
    coverage: float = Field(default=1.0, ge=0, le=1, description="Share of eligible units in the experiment.")
    namespace: NamespaceSpec | None = None
    start: AwareDatetime | None = None
    stop: AwareDatetime | None = None


_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_MARKETING = [ActionClass.TRIGGERED, ActionClass.PROMOTIONAL]


class CapSpec(_Strict):
    """At most ``limit`` sends in any rolling ``window``, counted over the actions of ``classes`` on
    ``channels`` (empty: across channels). Transactional actions are never capped."""

    id: Identifier | None = None
    limit: int = Field(ge=1)
    window: Duration
    classes: list[ActionClass] = Field(default_factory=lambda: list(_MARKETING))
    channels: list[Channel] = Field(default_factory=list)


class QuietHoursSpec(_Strict):
    """No send between ``start`` and ``end`` (HH:MM, customer's local time; may cross midnight)."""

    start: Annotated[str, Field(pattern=_CLOCK)]
    end: Annotated[str, Field(pattern=_CLOCK)]
    classes: list[ActionClass] = Field(default_factory=lambda: list(_MARKETING))


class EngagementSpec(_Strict):
    """Actions of ``classes`` stop for a customer known for longer than ``window`` with no open or click
    in it."""

    window: Duration = Field(default=timedelta(days=90))
    classes: list[ActionClass] = Field(default_factory=lambda: [ActionClass.PROMOTIONAL])


class PolicySpec(_Strict):
    time_zone: str = Field(
        default="UTC", description="IANA zone for quiet hours when the request carries no time_zone."
    )
    caps: list[CapSpec] = Field(default_factory=list)
    quiet_hours: dict[Channel, QuietHoursSpec] = Field(default_factory=dict)
    engagement: EngagementSpec | None = None


class SegmentSpec(_Strict):
    """A dynamic audience: the customers whose state satisfies ``condition`` now (no request involved)."""

    description: str = ""
    condition: str = Field(
        min_length=1, description="CEL over `customer` only (the fields rules see), returning bool."
    )


class BudgetSpec(_Strict):
    sends: int | None = Field(default=None, ge=1, description="The most sends the campaign makes.")
    discount: float | None = Field(
        default=None,
        gt=0,
        description="The most discount the campaign is expected to give: the sum over its sends of "
        "P(convert | sent) x value x discount (needs a ranked targeting rule).",
    )


class CampaignSpec(_Strict):
    """Outbound decisions for a whole segment: every member is decided for ``trigger`` (its actions must
    be promotional) through the same pipeline, committed like any decision."""

    description: str = ""
    audience: Identifier = Field(description="The segment whose members the campaign decides for.")
    trigger: Identifier = Field(description="The trigger its decisions answer; its actions are promotional.")
    start: AwareDatetime = Field(description="The run window: `campaign run` refuses outside it.")
    stop: AwareDatetime
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    targeting: Literal["everyone", "ranked", "propensity", "uplift"] = Field(
        default="everyone",
        description="everyone: members in scan order until the budget is spent; ranked: the members "
        "whose decision scores highest first (whatever the models loaded score); propensity: the highest "
        "P(convert | sent) x value x kept first; uplift: only members whose expected incremental value "
        "is positive, best first (needs an uplift model covering the campaign's flow).",
    )
    holdout: Identifier | None = Field(
        default=None, description="An experiment covering the campaign's actions (its arms are logged)."
    )


class CatalogSpec(_Strict):
    version: Literal[1] = Field(description="Catalog schema version.")
    name: str = ""
    channels: dict[Channel, ChannelSpec] = Field(min_length=1)
    triggers: list[Identifier] = Field(
        default_factory=list, description="Extra triggers callers may send that no action answers yet."
    )
    flows: dict[Identifier, FlowSpec] = Field(min_length=1)
    actions: list[ActionSpec] = Field(min_length=1)
    experiments: list[ExperimentSpec] = Field(default_factory=list)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    segments: dict[Identifier, SegmentSpec] = Field(default_factory=dict)
    campaigns: dict[Identifier, CampaignSpec] = Field(default_factory=dict)
