from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_LOADED: _ClassVar[ModelState]
    MODEL_STATE_MISSING: _ClassVar[ModelState]
    MODEL_STATE_CORRUPT: _ClassVar[ModelState]
    MODEL_STATE_INCOMPATIBLE: _ClassVar[ModelState]
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_LOADED: ModelState
MODEL_STATE_MISSING: ModelState
MODEL_STATE_CORRUPT: ModelState
MODEL_STATE_INCOMPATIBLE: ModelState

class PlanCampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class CampaignPlan(_message.Message):
    __slots__ = ("campaign_id", "scanned", "audience", "sends", "over_budget", "held_out", "nothing_sent", "refusals", "by_channel", "by_hour", "expected_value", "failed", "decided", "not_targeted", "expected_discount_spend", "cost", "incremental", "mde_conversion", "mde_revenue_per_member")
    class RefusalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByChannelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByHourEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class FailedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    SCANNED_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    SENDS_FIELD_NUMBER: _ClassVar[int]
    OVER_BUDGET_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_FIELD_NUMBER: _ClassVar[int]
    NOTHING_SENT_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    BY_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    BY_HOUR_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VALUE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    DECIDED_FIELD_NUMBER: _ClassVar[int]
    NOT_TARGETED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DISCOUNT_SPEND_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    INCREMENTAL_FIELD_NUMBER: _ClassVar[int]
    MDE_CONVERSION_FIELD_NUMBER: _ClassVar[int]
    MDE_REVENUE_PER_MEMBER_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    scanned: int
    audience: int
    sends: int
    over_budget: int
    held_out: int
    nothing_sent: int
    refusals: _containers.ScalarMap[str, int]
    by_channel: _containers.ScalarMap[str, int]
    by_hour: _containers.ScalarMap[str, int]
    expected_value: float
    failed: _containers.ScalarMap[str, int]
    decided: int
    not_targeted: int
    expected_discount_spend: float
    cost: float
    incremental: CampaignEstimate
    mde_conversion: float
    mde_revenue_per_member: float
    def __init__(self, campaign_id: _Optional[str] = ..., scanned: _Optional[int] = ..., audience: _Optional[int] = ..., sends: _Optional[int] = ..., over_budget: _Optional[int] = ..., held_out: _Optional[int] = ..., nothing_sent: _Optional[int] = ..., refusals: _Optional[_Mapping[str, int]] = ..., by_channel: _Optional[_Mapping[str, int]] = ..., by_hour: _Optional[_Mapping[str, int]] = ..., expected_value: _Optional[float] = ..., failed: _Optional[_Mapping[str, int]] = ..., decided: _Optional[int] = ..., not_targeted: _Optional[int] = ..., expected_discount_spend: _Optional[float] = ..., cost: _Optional[float] = ..., incremental: _Optional[_Union[CampaignEstimate, _Mapping]] = ..., mde_conversion: _Optional[float] = ..., mde_revenue_per_member: _Optional[float] = ...) -> None: ...

class CampaignEstimate(_message.Message):
    __slots__ = ("sends_estimated", "conversions", "conversions_low", "conversions_high", "revenue", "revenue_low", "revenue_high", "net_revenue")
    SENDS_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_LOW_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_HIGH_FIELD_NUMBER: _ClassVar[int]
    REVENUE_FIELD_NUMBER: _ClassVar[int]
    REVENUE_LOW_FIELD_NUMBER: _ClassVar[int]
    REVENUE_HIGH_FIELD_NUMBER: _ClassVar[int]
    NET_REVENUE_FIELD_NUMBER: _ClassVar[int]
    sends_estimated: int
    conversions: float
    conversions_low: float
    conversions_high: float
    revenue: float
    revenue_low: float
    revenue_high: float
    net_revenue: float
    def __init__(self, sends_estimated: _Optional[int] = ..., conversions: _Optional[float] = ..., conversions_low: _Optional[float] = ..., conversions_high: _Optional[float] = ..., revenue: _Optional[float] = ..., revenue_low: _Optional[float] = ..., revenue_high: _Optional[float] = ..., net_revenue: _Optional[float] = ...) -> None: ...

class RunCampaignRequest(_message.Message):
    __slots__ = ("campaign_id", "run_id", "batch_size")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    run_id: str
    batch_size: int
    def __init__(self, campaign_id: _Optional[str] = ..., run_id: _Optional[str] = ..., batch_size: _Optional[int] = ...) -> None: ...

class CampaignProgress(_message.Message):
    __slots__ = ("campaign_id", "run_id", "scanned", "audience", "decided", "sent", "replayed", "held_out", "failed", "refusals", "budget_reached", "done")
    class FailedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class RefusalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SCANNED_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    DECIDED_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REACHED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    run_id: str
    scanned: int
    audience: int
    decided: int
    sent: int
    replayed: int
    held_out: int
    failed: _containers.ScalarMap[str, int]
    refusals: _containers.ScalarMap[str, int]
    budget_reached: bool
    done: bool
    def __init__(self, campaign_id: _Optional[str] = ..., run_id: _Optional[str] = ..., scanned: _Optional[int] = ..., audience: _Optional[int] = ..., decided: _Optional[int] = ..., sent: _Optional[int] = ..., replayed: _Optional[int] = ..., held_out: _Optional[int] = ..., failed: _Optional[_Mapping[str, int]] = ..., refusals: _Optional[_Mapping[str, int]] = ..., budget_reached: _Optional[bool] = ..., done: _Optional[bool] = ...) -> None: ...

class EraseCustomerRequest(_message.Message):
    __slots__ = ("user_id", "reason")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    reason: str
    def __init__(self, user_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EraseCustomerResponse(_message.Message):
    __slots__ = ("deleted", "experiments", "nothing_left")
    class DeletedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DELETED_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    NOTHING_LEFT_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.ScalarMap[str, int]
    experiments: _containers.RepeatedScalarFieldContainer[str]
    nothing_left: bool
    def __init__(self, deleted: _Optional[_Mapping[str, int]] = ..., experiments: _Optional[_Iterable[str]] = ..., nothing_left: _Optional[bool] = ...) -> None: ...

class GetModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("kind", "state", "version", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    state: ModelState
    version: str
    detail: str
    def __init__(self, kind: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., version: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class GetModelsResponse(_message.Message):
    __slots__ = ("models", "models_dir")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MODELS_DIR_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    models_dir: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., models_dir: _Optional[str] = ...) -> None: ...
