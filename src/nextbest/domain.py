"""Domain types shared by the pipeline stages: plain frozen dataclasses, no transport types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from nextbest.errors import FieldViolation

__all__ = [
    "ActionClass",
    "BounceKind",
    "Cancellation",
    "Channel",
    "ChosenAction",
    "Decision",
    "DecisionRequest",
    "Event",
    "EventOutcome",
    "EventResult",
    "EventType",
    "ExperimentExposure",
    "OrderItem",
    "ReasonCode",
    "Rejection",
    "RequestContext",
    "SendTimeSource",
]


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    ONSITE = "onsite"
    ADS = "ads"


class ActionClass(StrEnum):
    """Classes are strictly ordered; a lower ``rank`` wins arbitration."""

    TRANSACTIONAL = "transactional"
    TRIGGERED = "triggered"
    PROMOTIONAL = "promotional"

    @property
    def rank(self) -> int:
        return _CLASS_RANK[self]

    @property
    def is_marketing(self) -> bool:
        return self is not ActionClass.TRANSACTIONAL


_CLASS_RANK = {ActionClass.TRANSACTIONAL: 0, ActionClass.TRIGGERED: 1, ActionClass.PROMOTIONAL: 2}


class ReasonCode(StrEnum):
    NO_CONSENT = "NO_CONSENT"
    SUPPRESSED = "SUPPRESSED"
    EXITED_FLOW = "EXITED_FLOW"
    NOT_IN_JOURNEY = "NOT_IN_JOURNEY"
    RULE_FALSE = "RULE_FALSE"
    RULE_ERROR = "RULE_ERROR"
    LOWER_PRIORITY = "LOWER_PRIORITY"
    MAX_ACTIONS = "MAX_ACTIONS"
    FREQUENCY_CAP = "FREQUENCY_CAP"
    QUIET_HOURS = "QUIET_HOURS"
    COOLDOWN = "COOLDOWN"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    HELD_OUT = "HELD_OUT"
    NO_EXPECTED_LIFT = "NO_EXPECTED_LIFT"
    IN_HIGHER_JOURNEY = "IN_HIGHER_JOURNEY"
    NOT_DUE = "NOT_DUE"
    UNENGAGED = "UNENGAGED"


class EventType(StrEnum):
    PRODUCT_VIEWED = "product_viewed"
    ADDED_TO_CART = "added_to_cart"
    CART_ABANDONED = "cart_abandoned"
    ORDER_PLACED = "order_placed"
    REFUNDED = "refunded"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    CONSENT_CHANGED = "consent_changed"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    # Inventory events are about products (``product_ids``), not a customer.
    OUT_OF_STOCK = "out_of_stock"
    BACK_IN_STOCK = "back_in_stock"

    @property
    def is_inventory(self) -> bool:
        return self in (EventType.OUT_OF_STOCK, EventType.BACK_IN_STOCK)


class BounceKind(StrEnum):
    HARD = "hard"
    SOFT = "soft"


@dataclass(frozen=True, slots=True)
class RequestContext:
    cart_value: float | None = None
    product_ids: tuple[str, ...] = ()
    page_category: str = ""
    time_zone: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    out_of_stock_product_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """One ``NextAction`` call. ``channels`` holds ``None`` for a value the wire could not name."""

    request_id: str
    user_id: str
    trigger: str
    occurred_at: datetime | None
    context: RequestContext = RequestContext()
    channels: tuple[Channel | None, ...] = ()
    max_actions: int = 0
    explain: bool = False


class SendTimeSource(StrEnum):
    """Where ``send_at`` came from."""

    # The action is sent when due (its delay or flow step); it does not optimize its send time.
    FIXED = "fixed"
    # The hour the send-time model predicts best for this customer, from their own engagement history.
    PERSONAL = "personal"
    # The customer has no engagement history yet: the population's best hour.
    POPULATION = "population"
    # The action optimizes its send time but no send-time model is loaded: sent when due.
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True, init=False)
class ChosenAction:
    action_id: str
    flow: str
    channel: Channel
    action_class: ActionClass
    send_at: datetime
    parameters: Mapping[str, str]
    score: float
    send_time: SendTimeSource = SendTimeSource.FIXED
    # The scoring features (float64, see nextbest.models.features), logged with the exposure.
    features: bytes = field(default=b"", compare=False, repr=False)

    # Written by hand (``init=False``): every decision builds one per winner. See ``Decision.__init__``.
    def __init__(  # noqa: PLR0917 - positional, as the generated __init__ takes them
        self,
        action_id: str,
        flow: str,
        channel: Channel,
        action_class: ActionClass,
        send_at: datetime,
        parameters: Mapping[str, str],
        score: float,
        send_time: SendTimeSource = SendTimeSource.FIXED,
        features: bytes = b"",
    ) -> None:
        _ca_action_id(self, action_id)
        _ca_flow(self, flow)
        _ca_channel(self, channel)
        _ca_action_class(self, action_class)
        _ca_send_at(self, send_at)
        _ca_parameters(self, parameters)
        _ca_score(self, score)
        _ca_send_time(self, send_time)
        _ca_features(self, features)


class Rejection(NamedTuple):
    """Why a candidate was not chosen. A named tuple, not a frozen dataclass: a decision makes one per
    refused candidate (twenty on a busy trigger), and a tuple is built three times faster."""

    action_id: str
    flow: str
    channel: Channel
    action_class: ActionClass
    reason: ReasonCode
    detail: str


@dataclass(frozen=True, slots=True)
class ExperimentExposure:
    """A unit's arm in an experiment and the in-scope action it received, or, held out, would have
    received (the counterfactual)."""

    experiment_id: str
    arm_id: str
    bucket: float
    hash_version: int
    seed: str
    probability: float
    held_out: bool
    action: ChosenAction


@dataclass(frozen=True, slots=True)
class Cancellation:
    """A pending action of an earlier decision that must not be sent any more."""

    decision_id: str
    action_id: str
    flow: str
    channel: Channel
    action_class: ActionClass
    send_at: datetime
    reason: str
    exposure_id: int = 0


@dataclass(frozen=True, slots=True, init=False)
class Decision:
    decision_id: str
    request_id: str
    user_id: str
    trigger: str
    occurred_at: datetime
    catalog_version: str
    actions: tuple[ChosenAction, ...]
    rejected: tuple[Rejection, ...]
    replayed: bool = False
    exposures: tuple[ExperimentExposure, ...] = ()
    cancelled: tuple[Cancellation, ...] = ()
    # The versions of the models that scored it, by kind.
    models: Mapping[str, str] = field(default_factory=dict)

    # Written by hand (``init=False``), the generated one's parameters and defaults: a frozen
    # dataclass's generated __init__ sets each field through ``object.__setattr__`` (a global, an
    # attribute and a generic lookup per field); the slots' own setters take half the time, and every
    # call builds two decisions (stored, answered). ``tests/test_domain.py`` checks both against the
    # fields.
    def __init__(  # noqa: PLR0917 - positional, as the generated __init__ takes them
        self,
        decision_id: str,
        request_id: str,
        user_id: str,
        trigger: str,
        occurred_at: datetime,
        catalog_version: str,
        actions: tuple[ChosenAction, ...],
        rejected: tuple[Rejection, ...],
        replayed: bool = False,
        exposures: tuple[ExperimentExposure, ...] = (),
        cancelled: tuple[Cancellation, ...] = (),
        models: Mapping[str, str] | None = None,
    ) -> None:
        _d_decision_id(self, decision_id)
        _d_request_id(self, request_id)
        _d_user_id(self, user_id)
        _d_trigger(self, trigger)
        _d_occurred_at(self, occurred_at)
        _d_catalog_version(self, catalog_version)
        _d_actions(self, actions)
        _d_rejected(self, rejected)
        _d_replayed(self, replayed)
        _d_exposures(self, exposures)
        _d_cancelled(self, cancelled)
        _d_models(self, {} if models is None else models)


# The slots' own setters (their member descriptors' ``__set__``, which a frozen class's ``__setattr__``
# does not intercept), for the hand-written __init__ above.
_ca_action_id = vars(ChosenAction)["action_id"].__set__
_ca_flow = vars(ChosenAction)["flow"].__set__
_ca_channel = vars(ChosenAction)["channel"].__set__
_ca_action_class = vars(ChosenAction)["action_class"].__set__
_ca_send_at = vars(ChosenAction)["send_at"].__set__
_ca_parameters = vars(ChosenAction)["parameters"].__set__
_ca_score = vars(ChosenAction)["score"].__set__
_ca_send_time = vars(ChosenAction)["send_time"].__set__
_ca_features = vars(ChosenAction)["features"].__set__
_d_decision_id = vars(Decision)["decision_id"].__set__
_d_request_id = vars(Decision)["request_id"].__set__
_d_user_id = vars(Decision)["user_id"].__set__
_d_trigger = vars(Decision)["trigger"].__set__
_d_occurred_at = vars(Decision)["occurred_at"].__set__
_d_catalog_version = vars(Decision)["catalog_version"].__set__
_d_actions = vars(Decision)["actions"].__set__
_d_rejected = vars(Decision)["rejected"].__set__
_d_replayed = vars(Decision)["replayed"].__set__
_d_exposures = vars(Decision)["exposures"].__set__
_d_cancelled = vars(Decision)["cancelled"].__set__
_d_models = vars(Decision)["models"].__set__


@dataclass(frozen=True, slots=True)
class OrderItem:
    product_id: str
    quantity: int
    unit_price: float


@dataclass(frozen=True, slots=True)
class Event:
    """One customer event. ``type`` and ``channel`` are ``None`` when the wire value was unspecified."""

    event_id: str
    user_id: str
    type: EventType | None
    occurred_at: datetime | None
    value: float = 0.0
    channel: Channel | None = None
    consent_granted: bool = False
    bounce_kind: BounceKind | None = None
    decision_id: str = ""
    product_ids: tuple[str, ...] = ()
    items: tuple[OrderItem, ...] = ()
    order_id: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)
    # Problems the transport found that the domain types cannot carry (an unknown enum number).
    wire_problems: tuple[FieldViolation, ...] = ()


class EventOutcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class EventResult:
    index: int
    event_id: str
    outcome: EventOutcome
    violations: tuple[FieldViolation, ...] = ()
    cancelled: tuple[Cancellation, ...] = ()
