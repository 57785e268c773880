import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNSPECIFIED: _ClassVar[Channel]
    CHANNEL_EMAIL: _ClassVar[Channel]
    CHANNEL_SMS: _ClassVar[Channel]
    CHANNEL_PUSH: _ClassVar[Channel]
    CHANNEL_ONSITE: _ClassVar[Channel]
    CHANNEL_ADS: _ClassVar[Channel]

class ActionClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_CLASS_UNSPECIFIED: _ClassVar[ActionClass]
    ACTION_CLASS_TRANSACTIONAL: _ClassVar[ActionClass]
    ACTION_CLASS_TRIGGERED: _ClassVar[ActionClass]
    ACTION_CLASS_PROMOTIONAL: _ClassVar[ActionClass]

class ReasonCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_CODE_UNSPECIFIED: _ClassVar[ReasonCode]
    REASON_CODE_NO_CONSENT: _ClassVar[ReasonCode]
    REASON_CODE_SUPPRESSED: _ClassVar[ReasonCode]
    REASON_CODE_EXITED_FLOW: _ClassVar[ReasonCode]
    REASON_CODE_NOT_IN_JOURNEY: _ClassVar[ReasonCode]
    REASON_CODE_RULE_FALSE: _ClassVar[ReasonCode]
    REASON_CODE_RULE_ERROR: _ClassVar[ReasonCode]
    REASON_CODE_LOWER_PRIORITY: _ClassVar[ReasonCode]
    REASON_CODE_MAX_ACTIONS: _ClassVar[ReasonCode]
    REASON_CODE_FREQUENCY_CAP: _ClassVar[ReasonCode]
    REASON_CODE_QUIET_HOURS: _ClassVar[ReasonCode]
    REASON_CODE_COOLDOWN: _ClassVar[ReasonCode]
    REASON_CODE_OUT_OF_STOCK: _ClassVar[ReasonCode]
    REASON_CODE_HELD_OUT: _ClassVar[ReasonCode]
    REASON_CODE_NO_EXPECTED_LIFT: _ClassVar[ReasonCode]
    REASON_CODE_IN_HIGHER_JOURNEY: _ClassVar[ReasonCode]
    REASON_CODE_NOT_DUE: _ClassVar[ReasonCode]
    REASON_CODE_UNENGAGED: _ClassVar[ReasonCode]

class SendTimeSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEND_TIME_SOURCE_UNSPECIFIED: _ClassVar[SendTimeSource]
    SEND_TIME_SOURCE_FIXED: _ClassVar[SendTimeSource]
    SEND_TIME_SOURCE_PERSONAL: _ClassVar[SendTimeSource]
    SEND_TIME_SOURCE_POPULATION: _ClassVar[SendTimeSource]
    SEND_TIME_SOURCE_FALLBACK: _ClassVar[SendTimeSource]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_PRODUCT_VIEWED: _ClassVar[EventType]
    EVENT_TYPE_ADDED_TO_CART: _ClassVar[EventType]
    EVENT_TYPE_CART_ABANDONED: _ClassVar[EventType]
    EVENT_TYPE_ORDER_PLACED: _ClassVar[EventType]
    EVENT_TYPE_REFUNDED: _ClassVar[EventType]
    EVENT_TYPE_SUBSCRIBED: _ClassVar[EventType]
    EVENT_TYPE_UNSUBSCRIBED: _ClassVar[EventType]
    EVENT_TYPE_CONSENT_CHANGED: _ClassVar[EventType]
    EVENT_TYPE_OPENED: _ClassVar[EventType]
    EVENT_TYPE_CLICKED: _ClassVar[EventType]
    EVENT_TYPE_BOUNCED: _ClassVar[EventType]
    EVENT_TYPE_COMPLAINED: _ClassVar[EventType]
    EVENT_TYPE_OUT_OF_STOCK: _ClassVar[EventType]
    EVENT_TYPE_BACK_IN_STOCK: _ClassVar[EventType]

class BounceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BOUNCE_KIND_UNSPECIFIED: _ClassVar[BounceKind]
    BOUNCE_KIND_HARD: _ClassVar[BounceKind]
    BOUNCE_KIND_SOFT: _ClassVar[BounceKind]

class EventStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_STATUS_UNSPECIFIED: _ClassVar[EventStatus]
    EVENT_STATUS_ACCEPTED: _ClassVar[EventStatus]
    EVENT_STATUS_DUPLICATE: _ClassVar[EventStatus]
    EVENT_STATUS_REJECTED: _ClassVar[EventStatus]
CHANNEL_UNSPECIFIED: Channel
CHANNEL_EMAIL: Channel
CHANNEL_SMS: Channel
CHANNEL_PUSH: Channel
CHANNEL_ONSITE: Channel
CHANNEL_ADS: Channel
ACTION_CLASS_UNSPECIFIED: ActionClass
ACTION_CLASS_TRANSACTIONAL: ActionClass
ACTION_CLASS_TRIGGERED: ActionClass
ACTION_CLASS_PROMOTIONAL: ActionClass
REASON_CODE_UNSPECIFIED: ReasonCode
REASON_CODE_NO_CONSENT: ReasonCode
REASON_CODE_SUPPRESSED: ReasonCode
REASON_CODE_EXITED_FLOW: ReasonCode
REASON_CODE_NOT_IN_JOURNEY: ReasonCode
REASON_CODE_RULE_FALSE: ReasonCode
REASON_CODE_RULE_ERROR: ReasonCode
REASON_CODE_LOWER_PRIORITY: ReasonCode
REASON_CODE_MAX_ACTIONS: ReasonCode
REASON_CODE_FREQUENCY_CAP: ReasonCode
REASON_CODE_QUIET_HOURS: ReasonCode
REASON_CODE_COOLDOWN: ReasonCode
REASON_CODE_OUT_OF_STOCK: ReasonCode
REASON_CODE_HELD_OUT: ReasonCode
REASON_CODE_NO_EXPECTED_LIFT: ReasonCode
REASON_CODE_IN_HIGHER_JOURNEY: ReasonCode
REASON_CODE_NOT_DUE: ReasonCode
REASON_CODE_UNENGAGED: ReasonCode
SEND_TIME_SOURCE_UNSPECIFIED: SendTimeSource
SEND_TIME_SOURCE_FIXED: SendTimeSource
SEND_TIME_SOURCE_PERSONAL: SendTimeSource
SEND_TIME_SOURCE_POPULATION: SendTimeSource
SEND_TIME_SOURCE_FALLBACK: SendTimeSource
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_PRODUCT_VIEWED: EventType
EVENT_TYPE_ADDED_TO_CART: EventType
EVENT_TYPE_CART_ABANDONED: EventType
EVENT_TYPE_ORDER_PLACED: EventType
EVENT_TYPE_REFUNDED: EventType
EVENT_TYPE_SUBSCRIBED: EventType
EVENT_TYPE_UNSUBSCRIBED: EventType
EVENT_TYPE_CONSENT_CHANGED: EventType
EVENT_TYPE_OPENED: EventType
EVENT_TYPE_CLICKED: EventType
EVENT_TYPE_BOUNCED: EventType
EVENT_TYPE_COMPLAINED: EventType
EVENT_TYPE_OUT_OF_STOCK: EventType
EVENT_TYPE_BACK_IN_STOCK: EventType
BOUNCE_KIND_UNSPECIFIED: BounceKind
BOUNCE_KIND_HARD: BounceKind
BOUNCE_KIND_SOFT: BounceKind
EVENT_STATUS_UNSPECIFIED: EventStatus
EVENT_STATUS_ACCEPTED: EventStatus
EVENT_STATUS_DUPLICATE: EventStatus
EVENT_STATUS_REJECTED: EventStatus

class GetLiftReportRequest(_message.Message):
    __slots__ = ("experiment_id", "metrics", "window_days", "as_of", "sequential", "alpha")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_DAYS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    SEQUENTIAL_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    window_days: float
    as_of: _timestamp_pb2.Timestamp
    sequential: bool
    alpha: float
    def __init__(self, experiment_id: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., window_days: _Optional[float] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequential: _Optional[bool] = ..., alpha: _Optional[float] = ...) -> None: ...

class LiftEstimate(_message.Message):
    __slots__ = ("value", "ci_low", "ci_high", "p_value", "standard_error", "error", "method")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    STANDARD_ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    value: float
    ci_low: float
    ci_high: float
    p_value: float
    standard_error: float
    error: str
    method: str
    def __init__(self, value: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., p_value: _Optional[float] = ..., standard_error: _Optional[float] = ..., error: _Optional[str] = ..., method: _Optional[str] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("quantity", "call", "underpowered")
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    UNDERPOWERED_FIELD_NUMBER: _ClassVar[int]
    quantity: str
    call: str
    underpowered: bool
    def __init__(self, quantity: _Optional[str] = ..., call: _Optional[str] = ..., underpowered: _Optional[bool] = ...) -> None: ...

class ArmStatistics(_message.Message):
    __slots__ = ("arm_id", "units", "mean", "variance")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    units: int
    mean: float
    variance: float
    def __init__(self, arm_id: _Optional[str] = ..., units: _Optional[int] = ..., mean: _Optional[float] = ..., variance: _Optional[float] = ...) -> None: ...

class ArmComparison(_message.Message):
    __slots__ = ("arm_id", "absolute", "relative", "cuped_theta", "mde", "mde_relative", "verdict")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_FIELD_NUMBER: _ClassVar[int]
    CUPED_THETA_FIELD_NUMBER: _ClassVar[int]
    MDE_FIELD_NUMBER: _ClassVar[int]
    MDE_RELATIVE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    absolute: LiftEstimate
    relative: LiftEstimate
    cuped_theta: float
    mde: float
    mde_relative: float
    verdict: Verdict
    def __init__(self, arm_id: _Optional[str] = ..., absolute: _Optional[_Union[LiftEstimate, _Mapping]] = ..., relative: _Optional[_Union[LiftEstimate, _Mapping]] = ..., cuped_theta: _Optional[float] = ..., mde: _Optional[float] = ..., mde_relative: _Optional[float] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ...) -> None: ...

class MetricReport(_message.Message):
    __slots__ = ("metric", "arms", "comparisons", "unadjusted")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_FIELD_NUMBER: _ClassVar[int]
    metric: str
    arms: _containers.RepeatedCompositeFieldContainer[ArmStatistics]
    comparisons: _containers.RepeatedCompositeFieldContainer[ArmComparison]
    unadjusted: _containers.RepeatedCompositeFieldContainer[ArmComparison]
    def __init__(self, metric: _Optional[str] = ..., arms: _Optional[_Iterable[_Union[ArmStatistics, _Mapping]]] = ..., comparisons: _Optional[_Iterable[_Union[ArmComparison, _Mapping]]] = ..., unadjusted: _Optional[_Iterable[_Union[ArmComparison, _Mapping]]] = ...) -> None: ...

class SampleRatio(_message.Message):
    __slots__ = ("chi2", "p_value", "alarm", "error")
    CHI2_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    ALARM_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    chi2: float
    p_value: float
    alarm: bool
    error: str
    def __init__(self, chi2: _Optional[float] = ..., p_value: _Optional[float] = ..., alarm: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class IncrementalTotals(_message.Message):
    __slots__ = ("arm_id", "units", "extra_conversions", "extra_revenue", "extra_revenue_low", "extra_revenue_high", "cost", "return_on_cost", "extra_conversions_low", "extra_conversions_high", "return_on_cost_low", "return_on_cost_high", "revenue_conclusive")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_REVENUE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_REVENUE_LOW_FIELD_NUMBER: _ClassVar[int]
    EXTRA_REVENUE_HIGH_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    RETURN_ON_COST_FIELD_NUMBER: _ClassVar[int]
    EXTRA_CONVERSIONS_LOW_FIELD_NUMBER: _ClassVar[int]
    EXTRA_CONVERSIONS_HIGH_FIELD_NUMBER: _ClassVar[int]
    RETURN_ON_COST_LOW_FIELD_NUMBER: _ClassVar[int]
    RETURN_ON_COST_HIGH_FIELD_NUMBER: _ClassVar[int]
    REVENUE_CONCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    units: int
    extra_conversions: float
    extra_revenue: float
    extra_revenue_low: float
    extra_revenue_high: float
    cost: float
    return_on_cost: float
    extra_conversions_low: float
    extra_conversions_high: float
    return_on_cost_low: float
    return_on_cost_high: float
    revenue_conclusive: bool
    def __init__(self, arm_id: _Optional[str] = ..., units: _Optional[int] = ..., extra_conversions: _Optional[float] = ..., extra_revenue: _Optional[float] = ..., extra_revenue_low: _Optional[float] = ..., extra_revenue_high: _Optional[float] = ..., cost: _Optional[float] = ..., return_on_cost: _Optional[float] = ..., extra_conversions_low: _Optional[float] = ..., extra_conversions_high: _Optional[float] = ..., return_on_cost_low: _Optional[float] = ..., return_on_cost_high: _Optional[float] = ..., revenue_conclusive: _Optional[bool] = ...) -> None: ...

class GetLiftReportResponse(_message.Message):
    __slots__ = ("experiment_id", "control_arm", "as_of", "window_days", "metrics", "sample_ratio", "excluded_units", "sequential", "warnings", "incremental", "erased_units")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ARM_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    WINDOW_DAYS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_UNITS_FIELD_NUMBER: _ClassVar[int]
    SEQUENTIAL_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    INCREMENTAL_FIELD_NUMBER: _ClassVar[int]
    ERASED_UNITS_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    control_arm: str
    as_of: _timestamp_pb2.Timestamp
    window_days: float
    metrics: _containers.RepeatedCompositeFieldContainer[MetricReport]
    sample_ratio: SampleRatio
    excluded_units: int
    sequential: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    incremental: _containers.RepeatedCompositeFieldContainer[IncrementalTotals]
    erased_units: int
    def __init__(self, experiment_id: _Optional[str] = ..., control_arm: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_days: _Optional[float] = ..., metrics: _Optional[_Iterable[_Union[MetricReport, _Mapping]]] = ..., sample_ratio: _Optional[_Union[SampleRatio, _Mapping]] = ..., excluded_units: _Optional[int] = ..., sequential: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ..., incremental: _Optional[_Iterable[_Union[IncrementalTotals, _Mapping]]] = ..., erased_units: _Optional[int] = ...) -> None: ...

class NextActionRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "trigger", "occurred_at", "context", "channels", "max_actions", "explain")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    trigger: str
    occurred_at: _timestamp_pb2.Timestamp
    context: RequestContext
    channels: _containers.RepeatedScalarFieldContainer[Channel]
    max_actions: int
    explain: bool
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., trigger: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., context: _Optional[_Union[RequestContext, _Mapping]] = ..., channels: _Optional[_Iterable[_Union[Channel, str]]] = ..., max_actions: _Optional[int] = ..., explain: _Optional[bool] = ...) -> None: ...

class NextActionBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[NextActionRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[NextActionRequest, _Mapping]]] = ...) -> None: ...

class NextActionBatchResponse(_message.Message):
    __slots__ = ("results", "answered", "failed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[NextActionResult]
    answered: int
    failed: int
    def __init__(self, results: _Optional[_Iterable[_Union[NextActionResult, _Mapping]]] = ..., answered: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class NextActionResult(_message.Message):
    __slots__ = ("index", "request_id", "response", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    request_id: str
    response: NextActionResponse
    error: _status_pb2.Status
    def __init__(self, index: _Optional[int] = ..., request_id: _Optional[str] = ..., response: _Optional[_Union[NextActionResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class RequestContext(_message.Message):
    __slots__ = ("cart_value", "product_ids", "page_category", "time_zone", "attributes", "out_of_stock_product_ids")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CART_VALUE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_STOCK_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    cart_value: float
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    page_category: str
    time_zone: str
    attributes: _containers.ScalarMap[str, str]
    out_of_stock_product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cart_value: _Optional[float] = ..., product_ids: _Optional[_Iterable[str]] = ..., page_category: _Optional[str] = ..., time_zone: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., out_of_stock_product_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class NextActionResponse(_message.Message):
    __slots__ = ("decision_id", "actions", "rejected", "catalog_version", "occurred_at", "replayed", "assignments", "cancelled")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    actions: _containers.RepeatedCompositeFieldContainer[ChosenAction]
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedCandidate]
    catalog_version: str
    occurred_at: _timestamp_pb2.Timestamp
    replayed: bool
    assignments: _containers.RepeatedCompositeFieldContainer[ExperimentAssignment]
    cancelled: _containers.RepeatedCompositeFieldContainer[Cancellation]
    def __init__(self, decision_id: _Optional[str] = ..., actions: _Optional[_Iterable[_Union[ChosenAction, _Mapping]]] = ..., rejected: _Optional[_Iterable[_Union[RejectedCandidate, _Mapping]]] = ..., catalog_version: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replayed: _Optional[bool] = ..., assignments: _Optional[_Iterable[_Union[ExperimentAssignment, _Mapping]]] = ..., cancelled: _Optional[_Iterable[_Union[Cancellation, _Mapping]]] = ...) -> None: ...

class Cancellation(_message.Message):
    __slots__ = ("decision_id", "action_id", "flow", "channel", "action_class", "send_at", "reason")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ACTION_CLASS_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    action_id: str
    flow: str
    channel: Channel
    action_class: ActionClass
    send_at: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, decision_id: _Optional[str] = ..., action_id: _Optional[str] = ..., flow: _Optional[str] = ..., channel: _Optional[_Union[Channel, str]] = ..., action_class: _Optional[_Union[ActionClass, str]] = ..., send_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ExperimentAssignment(_message.Message):
    __slots__ = ("experiment_id", "arm_id", "held_out", "action_id", "bucket", "hash_version", "probability", "channel", "send_at", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_FIELD_NUMBER: _ClassVar[int]
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    HASH_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    arm_id: str
    held_out: bool
    action_id: str
    bucket: float
    hash_version: int
    probability: float
    channel: Channel
    send_at: _timestamp_pb2.Timestamp
    parameters: _containers.ScalarMap[str, str]
    def __init__(self, experiment_id: _Optional[str] = ..., arm_id: _Optional[str] = ..., held_out: _Optional[bool] = ..., action_id: _Optional[str] = ..., bucket: _Optional[float] = ..., hash_version: _Optional[int] = ..., probability: _Optional[float] = ..., channel: _Optional[_Union[Channel, str]] = ..., send_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parameters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ChosenAction(_message.Message):
    __slots__ = ("action_id", "flow", "channel", "action_class", "send_at", "parameters", "score", "send_time")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ACTION_CLASS_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    flow: str
    channel: Channel
    action_class: ActionClass
    send_at: _timestamp_pb2.Timestamp
    parameters: _containers.ScalarMap[str, str]
    score: float
    send_time: SendTimeSource
    def __init__(self, action_id: _Optional[str] = ..., flow: _Optional[str] = ..., channel: _Optional[_Union[Channel, str]] = ..., action_class: _Optional[_Union[ActionClass, str]] = ..., send_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parameters: _Optional[_Mapping[str, str]] = ..., score: _Optional[float] = ..., send_time: _Optional[_Union[SendTimeSource, str]] = ...) -> None: ...

class RejectedCandidate(_message.Message):
    __slots__ = ("action_id", "flow", "channel", "action_class", "reason", "detail")
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ACTION_CLASS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    flow: str
    channel: Channel
    action_class: ActionClass
    reason: ReasonCode
    detail: str
    def __init__(self, action_id: _Optional[str] = ..., flow: _Optional[str] = ..., channel: _Optional[_Union[Channel, str]] = ..., action_class: _Optional[_Union[ActionClass, str]] = ..., reason: _Optional[_Union[ReasonCode, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class OrderItem(_message.Message):
    __slots__ = ("product_id", "quantity", "unit_price")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    quantity: int
    unit_price: float
    def __init__(self, product_id: _Optional[str] = ..., quantity: _Optional[int] = ..., unit_price: _Optional[float] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "user_id", "type", "occurred_at", "value", "channel", "consent_granted", "bounce_kind", "decision_id", "product_ids", "items", "order_id", "properties")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONSENT_GRANTED_FIELD_NUMBER: _ClassVar[int]
    BOUNCE_KIND_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    type: EventType
    occurred_at: _timestamp_pb2.Timestamp
    value: float
    channel: Channel
    consent_granted: bool
    bounce_kind: BounceKind
    decision_id: str
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    items: _containers.RepeatedCompositeFieldContainer[OrderItem]
    order_id: str
    properties: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[float] = ..., channel: _Optional[_Union[Channel, str]] = ..., consent_granted: _Optional[bool] = ..., bounce_kind: _Optional[_Union[BounceKind, str]] = ..., decision_id: _Optional[str] = ..., product_ids: _Optional[_Iterable[str]] = ..., items: _Optional[_Iterable[_Union[OrderItem, _Mapping]]] = ..., order_id: _Optional[str] = ..., properties: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RecordEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class EventError(_message.Message):
    __slots__ = ("field", "description")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    field: str
    description: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class EventResult(_message.Message):
    __slots__ = ("index", "event_id", "status", "errors", "cancelled")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    index: int
    event_id: str
    status: EventStatus
    errors: _containers.RepeatedCompositeFieldContainer[EventError]
    cancelled: _containers.RepeatedCompositeFieldContainer[Cancellation]
    def __init__(self, index: _Optional[int] = ..., event_id: _Optional[str] = ..., status: _Optional[_Union[EventStatus, str]] = ..., errors: _Optional[_Iterable[_Union[EventError, _Mapping]]] = ..., cancelled: _Optional[_Iterable[_Union[Cancellation, _Mapping]]] = ...) -> None: ...

class RecordEventsResponse(_message.Message):
    __slots__ = ("results", "accepted", "duplicates", "rejected")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EventResult]
    accepted: int
    duplicates: int
    rejected: int
    def __init__(self, results: _Optional[_Iterable[_Union[EventResult, _Mapping]]] = ..., accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ...) -> None: ...
