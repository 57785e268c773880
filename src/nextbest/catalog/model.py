"""The compiled catalog the pipeline reads: immutable, indexed by trigger."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from nextbest.catalog.policy import ContactPolicy
from nextbest.catalog.rules import CompiledRule
from nextbest.catalog.schema import ActionSpec, FlowSpec
from nextbest.domain import ActionClass, Channel, EventType
from nextbest.experiments.model import Experiment

__all__ = ["Action", "Catalog", "ChannelPolicy", "Flow", "Step", "param_str", "parse_discount"]

# A flow without steps keeps a journey open this long after entry.
DEFAULT_JOURNEY = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    requires_consent: bool
    default_consent: bool


@dataclass(frozen=True, slots=True)
class Action:
    id: str
    flow: str
    channel: Channel
    action_class: ActionClass
    triggers: frozenset[str]
    rule: CompiledRule
    delay: timedelta
    value: float
    base_propensity: float
    cost: float
    parameters: Mapping[str, str]
    description: str = ""
    cooldown: timedelta = timedelta(0)
    send_window: timedelta = timedelta(hours=12)
    inventory: Literal["ignore", "in_stock"] = "ignore"
    send_time: Literal["fixed", "optimize"] = "fixed"
    value_from: Literal["cart_value", "average_order"] | None = None
    discount_parameter: str | None = None
    # The index of the flow step the action belongs to, if its flow has steps.
    step: int | None = None
    # (class rank, value, base propensity) as floats: the action's own scoring features, built once.
    scoring_constants: tuple[float, float, float] = field(init=False, repr=False, compare=False)
    # The fraction of the order this action, as declared, gives away (0 without a discount_parameter).
    # Scoring reads this one, never an experiment arm's override: the arms of an A/B test must face the
    # same decision to send, or the test compares different customers.
    discount: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        constants = (float(self.action_class.rank), float(self.value), float(self.base_propensity))
        object.__setattr__(self, "scoring_constants", constants)
        discount = 0.0
        if self.discount_parameter is not None:
            discount = parse_discount(self.parameters.get(self.discount_parameter, "0")) / 100.0
        object.__setattr__(self, "discount", discount)

    def value_for(self, cart_value: float | None, average_order: float | None = None) -> float:
        """The order value at stake: the request's cart, or the customer's average order, for an action
        valued by it (when there is one), else ``value``."""
        if self.value_from == "cart_value" and cart_value is not None:
            return cart_value
        if self.value_from == "average_order" and average_order is not None:
            return average_order
        return self.value

    @classmethod
    def from_spec(cls, spec: ActionSpec, rule: CompiledRule, step: int | None = None) -> Action:
        return cls(
            id=spec.id,
            flow=spec.flow,
            channel=spec.channel,
            action_class=spec.action_class,
            triggers=frozenset(spec.triggers),
            rule=rule,
            delay=spec.delay,
            value=spec.value,
            base_propensity=spec.base_propensity,
            cost=spec.cost,
            parameters={k: param_str(v) for k, v in spec.parameters.items()},
            description=spec.description,
            cooldown=spec.cooldown,
            send_window=spec.send_window,
            inventory=spec.inventory,
            send_time=spec.send_time,
            value_from=spec.value_from,
            discount_parameter=spec.discount_parameter,
            step=step,
        )


@dataclass(frozen=True, slots=True)
class Step:
    index: int
    after: timedelta
    actions: frozenset[str]
    when: CompiledRule


@dataclass(frozen=True, slots=True)
class Flow:
    id: str
    priority: int
    entry_triggers: frozenset[str]
    exit_on: frozenset[EventType]
    description: str = ""
    reentry: timedelta = timedelta(0)
    duration: timedelta = DEFAULT_JOURNEY
    steps: tuple[Step, ...] = ()
    # The highest class among the flow's actions: flows of a higher class always outrank.
    action_class: ActionClass = ActionClass.PROMOTIONAL

    @classmethod
    def from_spec(
        cls, flow_id: str, spec: FlowSpec, actions: Iterable[Action], steps: Sequence[Step] = ()
    ) -> Flow:
        actions = list(actions)
        entry = spec.entry_triggers
        triggers = (
            frozenset(entry) if entry is not None else frozenset(t for a in actions for t in a.triggers)
        )
        duration = spec.duration
        if duration is None:
            duration = steps[-1].after + timedelta(days=1) if steps else DEFAULT_JOURNEY
        top = min((a.action_class for a in actions), key=lambda c: c.rank, default=ActionClass.PROMOTIONAL)
        return cls(
            flow_id,
            spec.priority,
            triggers,
            frozenset(spec.exit_on),
            spec.description,
            spec.reentry,
            duration,
            tuple(steps),
            top,
        )

    def rank(self) -> tuple[int, int]:
        """Smaller is more important: class first, then declared priority."""
        return (self.action_class.rank, -self.priority)

    @property
    def is_journey(self) -> bool:
        """Marketing flows hold customers in journeys; transactional notices do not."""
        return self.action_class is not ActionClass.TRANSACTIONAL


@dataclass(frozen=True, slots=True)
class Segment:
    """A named audience: customers whose state satisfies ``condition`` (CEL over ``customer``)."""

    id: str
    description: str
    condition: CompiledRule


@dataclass(frozen=True, slots=True)
class Campaign:
    """Outbound decisions for a segment (``audience``): each member decided for ``trigger`` within the
    run window ``[start, stop)``, at most ``max_sends`` sends when budgeted."""

    id: str
    description: str
    audience: str
    trigger: str
    start: datetime
    stop: datetime
    max_sends: int | None = None
    holdout: str | None = None
    # "everyone" (scan order), "ranked" (best decision score first within the budget), "propensity"
    # (best P(convert | sent) x value x kept first) or "uplift" (positive expected incremental value only,
    # best first).
    targeting: str = "everyone"
    # The most expected discount spend (sum over sends of P(convert | sent) x value x discount).
    max_discount: float | None = None


@dataclass(frozen=True)
class Catalog:
    version: str
    source: str
    name: str
    channels: Mapping[Channel, ChannelPolicy]
    flows: Mapping[str, Flow]
    actions: tuple[Action, ...]
    extra_triggers: frozenset[str] = frozenset()
    experiments: tuple[Experiment, ...] = ()
    policy: ContactPolicy = field(default_factory=ContactPolicy)
    segments: Mapping[str, Segment] = field(default_factory=dict)
    campaigns: Mapping[str, Campaign] = field(default_factory=dict)
    _by_trigger: dict[str, tuple[Action, ...]] = field(init=False, repr=False, compare=False)
    # Flows from the most to the least important (class, then priority), for the conflict check.
    flows_by_rank: tuple[Flow, ...] = field(init=False, repr=False, compare=False)
    _triggers: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[Action]] = {}
        for action in self.actions:
            for trigger in action.triggers:
                index.setdefault(trigger, []).append(action)
        object.__setattr__(self, "_by_trigger", {t: tuple(a) for t, a in index.items()})
        object.__setattr__(self, "flows_by_rank", tuple(sorted(self.flows.values(), key=Flow.rank)))
        # Validation asks on every request: worked out once, not a new frozenset per call.
        object.__setattr__(self, "_triggers", frozenset(index) | self.extra_triggers)

    @property
    def triggers(self) -> frozenset[str]:
        """Every trigger a caller may send."""
        return self._triggers

    def experiment(self, experiment_id: str) -> Experiment | None:
        return next((e for e in self.experiments if e.id == experiment_id), None)

    def actions_for(self, trigger: str) -> tuple[Action, ...]:
        return self._by_trigger.get(trigger, ())


def param_str(value: str | bool | int | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_discount(value: str) -> float:
    """A discount parameter as a percent in [0, 100]; ``ValueError`` says what is wrong."""
    try:
        percent = float(value)
    except ValueError:
        raise ValueError(f"a discount must be a number of percent, got {value!r}") from None
    if not 0.0 <= percent <= 100.0:  # also rejects NaN
        raise ValueError(f"a discount must be between 0 and 100 percent, got {value!r}")
    return percent
