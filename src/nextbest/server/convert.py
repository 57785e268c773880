"""Protobuf <-> domain conversion. No decisions are made here."""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2

from nextbest.api.v1 import admin_service_pb2 as admin_pb
from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.domain import (
    ActionClass,
    BounceKind,
    Cancellation,
    Channel,
    Decision,
    DecisionRequest,
    Event,
    EventOutcome,
    EventResult,
    EventType,
    OrderItem,
    ReasonCode,
    RequestContext,
    SendTimeSource,
)
from nextbest.errors import FieldViolation, InvalidArgumentError, NextbestError
from nextbest.models.registry import ModelSet, ModelState

if TYPE_CHECKING:  # the report and statistics packages load on the first report, not at start
    from nextbest.reports.report import LiftReport
    from nextbest.reports.request import ReportRequest
    from nextbest.stats.analysis import Verdict
    from nextbest.stats.frequentist import Comparison, Estimate
    from nextbest.store.erasure import Erased

__all__ = [
    "batch_from_proto",
    "batch_to_proto",
    "decision_to_proto",
    "erased_to_proto",
    "error_status",
    "events_from_proto",
    "model_versions",
    "report_request_from_proto",
    "report_to_proto",
    "request_from_proto",
    "results_to_proto",
]

_CHANNEL_FROM = {pb.Channel.Value(f"CHANNEL_{c.name}"): c for c in Channel}
_CHANNEL_TO: dict[Any, Any] = {c: v for v, c in _CHANNEL_FROM.items()}
_CLASS_TO: dict[Any, Any] = {c: pb.ActionClass.Value(f"ACTION_CLASS_{c.name}") for c in ActionClass}
_SEND_TIME_TO: dict[Any, Any] = {
    s: pb.SendTimeSource.Value(f"SEND_TIME_SOURCE_{s.name}") for s in SendTimeSource
}
_REASON_TO: dict[Any, Any] = {r: pb.ReasonCode.Value(f"REASON_CODE_{r.name}") for r in ReasonCode}
_EVENT_FROM = {pb.EventType.Value(f"EVENT_TYPE_{e.name}"): e for e in EventType}
_BOUNCE_FROM = {pb.BounceKind.Value(f"BOUNCE_KIND_{b.name}"): b for b in BounceKind}
_STATUS_TO = {
    EventOutcome.ACCEPTED: pb.EVENT_STATUS_ACCEPTED,
    EventOutcome.DUPLICATE: pb.EVENT_STATUS_DUPLICATE,
    EventOutcome.REJECTED: pb.EVENT_STATUS_REJECTED,
}


def _time(message: object, field: str, ts: Timestamp) -> datetime | None:
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    try:
        return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.min.replace(tzinfo=UTC)  # out of range; validation names the field


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _stamp(value: datetime) -> Timestamp:
    """``Timestamp.FromDatetime`` without its pure-Python detour through ``timegm`` (several per call)."""
    if value.tzinfo is None:  # naive means UTC, as in FromDatetime
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


# The request's dataclasses built without their generated ``__init__``, slot by slot through each field's
# member descriptor (frozen dataclasses set every field with ``object.__setattr__``): two per call.
# ``tests/server/test_convert_fast.py`` checks these build what the constructors build, for every field.
_new = object.__new__
_REQUEST_SLOTS = tuple(DecisionRequest.__dict__[f.name].__set__ for f in fields(DecisionRequest))
_CONTEXT_SLOTS = tuple(RequestContext.__dict__[f.name].__set__ for f in fields(RequestContext))
(
    _set_request_id,
    _set_user_id,
    _set_trigger,
    _set_occurred_at,
    _set_context,
    _set_channels,
    _set_max_actions,
    _set_explain,
) = _REQUEST_SLOTS
(
    _set_cart_value,
    _set_product_ids,
    _set_page_category,
    _set_time_zone,
    _set_attributes,
    _set_out_of_stock,
) = _CONTEXT_SLOTS


def request_from_proto(msg: pb.NextActionRequest) -> DecisionRequest:
    """``DecisionRequest(request_id=msg.request_id, ..., context=RequestContext(...))``, cheaper: empty
    repeated and map fields are not iterated, and the two objects are filled slot by slot."""
    ctx = msg.context
    context = _new(RequestContext)
    _set_cart_value(context, ctx.cart_value if ctx.HasField("cart_value") else None)
    ids = ctx.product_ids
    _set_product_ids(context, tuple(ids[:]) if ids else ())
    _set_page_category(context, ctx.page_category)
    _set_time_zone(context, ctx.time_zone)
    attributes = ctx.attributes
    _set_attributes(context, dict(attributes) if attributes else {})
    ids = ctx.out_of_stock_product_ids
    _set_out_of_stock(context, tuple(ids[:]) if ids else ())
    request = _new(DecisionRequest)
    _set_request_id(request, msg.request_id)
    _set_user_id(request, msg.user_id)
    _set_trigger(request, msg.trigger)
    _set_occurred_at(request, _time(msg, "occurred_at", msg.occurred_at))
    _set_context(request, context)
    channels = msg.channels
    _set_channels(request, tuple([_CHANNEL_FROM.get(c) for c in channels]) if channels else ())
    _set_max_actions(request, msg.max_actions)
    _set_explain(request, msg.explain)
    return request


def decision_to_proto(decision: Decision) -> pb.NextActionResponse:
    """The response; repeated fields that are empty (no rejections without ``explain``, most often no
    assignments or cancellations) are left unset rather than given empty lists, which costs as much as
    a message each."""
    occurred_at = decision.occurred_at
    occurred = _stamp(occurred_at)
    response = pb.NextActionResponse(
        decision_id=decision.decision_id,
        catalog_version=decision.catalog_version,
        occurred_at=occurred,
        replayed=decision.replayed,
    )
    add = response.actions.add  # built in place, not built then copied in
    for a in decision.actions:
        add(
            action_id=a.action_id,
            flow=a.flow,
            channel=_CHANNEL_TO[a.channel],
            action_class=_CLASS_TO[a.action_class],
            # Sent now (on-site, in-app): the decision's own instant, converted once.
            send_at=occurred if a.send_at == occurred_at else _stamp(a.send_at),
            parameters=a.parameters,
            score=a.score,
            send_time=_SEND_TIME_TO[a.send_time],
        )
    if decision.rejected:
        response.rejected.extend(
            [
                pb.RejectedCandidate(
                    action_id=r.action_id,
                    flow=r.flow,
                    channel=_CHANNEL_TO[r.channel],
                    action_class=_CLASS_TO[r.action_class],
                    reason=_REASON_TO[r.reason],
                    detail=r.detail,
                )
                for r in decision.rejected
            ]
        )
    if decision.exposures:
        response.assignments.extend(
            [
                pb.ExperimentAssignment(
                    experiment_id=e.experiment_id,
                    arm_id=e.arm_id,
                    held_out=e.held_out,
                    action_id=e.action.action_id,
                    bucket=e.bucket,
                    hash_version=e.hash_version,
                    probability=e.probability,
                    channel=_CHANNEL_TO[e.action.channel],
                    send_at=_stamp(e.action.send_at),
                    parameters=e.action.parameters,
                )
                for e in decision.exposures
            ]
        )
    if decision.cancelled:
        response.cancelled.extend([cancellation_to_proto(c) for c in decision.cancelled])
    return response


def batch_from_proto(msg: pb.NextActionBatchRequest) -> list[DecisionRequest]:
    return [request_from_proto(r) for r in msg.requests]


def batch_to_proto(
    requests: list[DecisionRequest], results: list[Decision | NextbestError]
) -> pb.NextActionBatchResponse:
    """One result per request, in order. An item's INVALID_ARGUMENT names its fields from the batch
    request (``requests[3].user_id``), so the path is the same whether a caller reads it or a tool does."""
    response = pb.NextActionBatchResponse()
    items = response.results
    failed = 0
    for index, (request, result) in enumerate(zip(requests, results, strict=True)):
        item = items.add(index=index, request_id=request.request_id)
        if isinstance(result, Decision):
            item.response.CopyFrom(decision_to_proto(result))
        else:
            item.error.CopyFrom(error_status(result, f"requests[{index}]."))
            failed += 1
    response.answered = len(requests) - failed
    response.failed = failed
    return response


def error_status(exc: NextbestError, field_prefix: str = "") -> status_pb2.Status:
    """The ``google.rpc.Status`` of an error: its declared code, its message and, for an invalid
    argument, a ``google.rpc.BadRequest`` naming each field (prefixed with ``field_prefix``)."""
    status = status_pb2.Status(code=getattr(code_pb2, exc.status, code_pb2.INTERNAL), message=str(exc))
    if isinstance(exc, InvalidArgumentError):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=field_prefix + v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
        status.details.append(detail)
    return status


def cancellation_to_proto(c: Cancellation) -> pb.Cancellation:
    return pb.Cancellation(
        decision_id=c.decision_id,
        action_id=c.action_id,
        flow=c.flow,
        channel=_CHANNEL_TO[c.channel],
        action_class=_CLASS_TO[c.action_class],
        send_at=_stamp(c.send_at),
        reason=c.reason,
    )


def events_from_proto(msg: pb.RecordEventsRequest) -> list[Event]:
    return [
        Event(
            event_id=e.event_id,
            user_id=e.user_id,
            type=_EVENT_FROM.get(e.type),
            occurred_at=_time(e, "occurred_at", e.occurred_at),
            value=e.value,
            channel=_CHANNEL_FROM.get(e.channel),
            consent_granted=e.consent_granted,
            bounce_kind=_BOUNCE_FROM.get(e.bounce_kind),
            decision_id=e.decision_id,
            product_ids=tuple(e.product_ids),
            items=tuple(OrderItem(i.product_id, i.quantity, i.unit_price) for i in e.items),
            order_id=e.order_id,
            properties=dict(e.properties),
            wire_problems=_unknown_enums(e),
        )
        for e in msg.events
    ]


def _unknown_enums(e: pb.Event) -> tuple[FieldViolation, ...]:
    problems = []
    if e.channel and e.channel not in _CHANNEL_FROM:
        problems.append(FieldViolation("channel", f"unknown channel number {e.channel}"))
    if e.bounce_kind and e.bounce_kind not in _BOUNCE_FROM:
        problems.append(FieldViolation("bounce_kind", f"unknown bounce kind number {e.bounce_kind}"))
    return tuple(problems)


def results_to_proto(results: list[EventResult]) -> pb.RecordEventsResponse:
    response = pb.RecordEventsResponse(
        results=[
            pb.EventResult(
                index=r.index,
                event_id=r.event_id,
                status=_STATUS_TO[r.outcome],
                errors=[pb.EventError(field=v.field, description=v.description) for v in r.violations],
                cancelled=[cancellation_to_proto(c) for c in r.cancelled],
            )
            for r in results
        ]
    )
    response.accepted = sum(r.outcome is EventOutcome.ACCEPTED for r in results)
    response.duplicates = sum(r.outcome is EventOutcome.DUPLICATE for r in results)
    response.rejected = sum(r.outcome is EventOutcome.REJECTED for r in results)
    return response


def report_request_from_proto(msg: pb.GetLiftReportRequest) -> ReportRequest:
    """The validated request; unset fields (no ``as_of``, a window or alpha of 0) take the defaults."""
    from nextbest.reports.request import ReportRequest

    return ReportRequest.validated(
        msg.experiment_id,
        list(msg.metrics),
        window_days=msg.window_days,
        as_of=_time(msg, "as_of", msg.as_of),
        sequential=msg.sequential,
        alpha=msg.alpha,
    )


def _estimate(e: Estimate) -> pb.LiftEstimate:
    out = pb.LiftEstimate(error=e.error, method=e.method)
    for name in ("value", "ci_low", "ci_high", "p_value", "standard_error"):
        number = getattr(e, name)
        if number is not None and math.isfinite(number):
            setattr(out, name, number)
    return out


def _comparisons(
    comparisons: dict[str, Comparison], verdicts: dict[str, Verdict] | None = None
) -> list[pb.ArmComparison]:
    out = []
    for arm, c in comparisons.items():
        item = pb.ArmComparison(arm_id=arm, absolute=_estimate(c.absolute), relative=_estimate(c.relative))
        for name in ("cuped_theta", "mde", "mde_relative"):
            number = getattr(c, name)
            if number is not None and math.isfinite(number):
                setattr(item, name, number)
        verdict = (verdicts or {}).get(arm)
        if verdict is not None:
            item.verdict.CopyFrom(
                pb.Verdict(quantity=verdict.quantity, call=verdict.call, underpowered=verdict.underpowered)
            )
        out.append(item)
    return out


def report_to_proto(report: LiftReport) -> pb.GetLiftReportResponse:
    srm = report.srm
    response = pb.GetLiftReportResponse(
        experiment_id=report.experiment_id,
        control_arm=report.control,
        as_of=_stamp(report.as_of),
        window_days=report.window.total_seconds() / 86400,
        sample_ratio=pb.SampleRatio(
            chi2=srm.chi2 if math.isfinite(srm.chi2) else 0.0,
            p_value=srm.p_value if math.isfinite(srm.p_value) else 0.0,
            alarm=srm.alarm,
            error=srm.error,
        ),
        excluded_units=report.excluded_units,
        erased_units=report.erased_units,
        sequential=report.sequential,
        warnings=report.warnings,
    )
    for name, metric in report.analysis.metrics.items():
        response.metrics.append(
            pb.MetricReport(
                metric=name,
                arms=[
                    pb.ArmStatistics(arm_id=a, units=s.n, mean=s.mean, variance=s.variance)
                    for a, s in metric.arms.items()
                ],
                comparisons=_comparisons(metric.headline, metric.verdicts),
                unadjusted=_comparisons(metric.comparisons) if metric.cuped_adjusted else [],
            )
        )
    for inc in report.incremental:
        item = pb.IncrementalTotals(
            arm_id=inc.arm, units=inc.units, cost=inc.cost, revenue_conclusive=inc.revenue_conclusive
        )
        for name in (
            "extra_conversions",
            "extra_conversions_low",
            "extra_conversions_high",
            "extra_revenue",
            "extra_revenue_low",
            "extra_revenue_high",
            "return_on_cost",
            "return_on_cost_low",
            "return_on_cost_high",
        ):
            number = getattr(inc, name)
            if number is not None and math.isfinite(number):
                setattr(item, name, number)
        response.incremental.append(item)
    return response


_MODEL_STATE_TO: dict[Any, Any] = {s: admin_pb.ModelState.Value(f"MODEL_STATE_{s.name}") for s in ModelState}


def models_to_proto(models: ModelSet, where: str) -> admin_pb.GetModelsResponse:
    return admin_pb.GetModelsResponse(
        models=[
            admin_pb.ModelStatus(
                kind=s.kind.value,
                state=_MODEL_STATE_TO[s.state],
                version=s.version,
                detail=s.detail,
            )
            for s in models.statuses
        ],
        models_dir=where,
    )


def model_versions(models: ModelSet) -> str:
    """The loaded version of each model kind, for audit entries: ``propensity=v3 uplift=- ...``."""
    return " ".join(f"{s.kind.value}={s.version or '-'}" for s in models.statuses)


def erased_to_proto(erased: Erased) -> admin_pb.EraseCustomerResponse:
    return admin_pb.EraseCustomerResponse(
        deleted=dict(erased.rows),
        experiments=sorted(erased.experiment_units),
        nothing_left=erased.nothing_left,
    )
