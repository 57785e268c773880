"""The hot path's conversions build what the plain constructors and message fields say, field by field."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.domain import (
    ActionClass,
    Cancellation,
    Channel,
    ChosenAction,
    Decision,
    DecisionRequest,
    ExperimentExposure,
    ReasonCode,
    Rejection,
    RequestContext,
    SendTimeSource,
)
from nextbest.server import convert

T0 = datetime(2026, 11, 18, 9, 46, 40, 123456, tzinfo=UTC)


def _stamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def test_a_full_request_converts_as_the_constructors_build_it() -> None:
    msg = pb.NextActionRequest(
        request_id="r-1",
        user_id="u-1",
        trigger="cart_abandoned",
        occurred_at=_stamp(T0),
        context=pb.RequestContext(
            cart_value=12.5,
            product_ids=["p1", "p2"],
            page_category="shoes",
            time_zone="Europe/Paris",
            attributes={"a": "1", "b": "2"},
            out_of_stock_product_ids=["p3"],
        ),
        channels=[pb.CHANNEL_EMAIL, pb.CHANNEL_ONSITE, 99],
        max_actions=2,
        explain=True,
    )
    expected = DecisionRequest(
        request_id="r-1",
        user_id="u-1",
        trigger="cart_abandoned",
        occurred_at=T0,
        context=RequestContext(
            cart_value=12.5,
            product_ids=("p1", "p2"),
            page_category="shoes",
            time_zone="Europe/Paris",
            attributes=dict(msg.context.attributes),  # the map's own order, as before
            out_of_stock_product_ids=("p3",),
        ),
        channels=(Channel.EMAIL, Channel.ONSITE, None),
        max_actions=2,
        explain=True,
    )
    got = convert.request_from_proto(msg)
    assert got == expected
    assert repr(got) == repr(expected)  # the fingerprint hashes a repr: same types, same order
    for f in fields(DecisionRequest):
        assert type(getattr(got, f.name)) is type(getattr(expected, f.name)), f.name
    for f in fields(RequestContext):
        assert type(getattr(got.context, f.name)) is type(getattr(expected.context, f.name)), f.name


def test_an_empty_request_converts_to_the_defaults() -> None:
    got = convert.request_from_proto(pb.NextActionRequest())
    expected = DecisionRequest(request_id="", user_id="", trigger="", occurred_at=None)
    assert got == expected and repr(got) == repr(expected)
    assert got.context.cart_value is None and got.context.attributes == {}
    # Each request has its own attributes dict, as the default factory gives.
    assert got.context.attributes is not convert.request_from_proto(pb.NextActionRequest()).context.attributes


def _action(action_id: str, send_at: datetime, channel: Channel = Channel.ONSITE) -> ChosenAction:
    return ChosenAction(
        action_id,
        "cart_recovery",
        channel,
        ActionClass.TRIGGERED,
        send_at,
        {"placement": "banner"},
        2.5,
        SendTimeSource.PERSONAL,
    )


def test_a_decision_with_every_part_converts_field_by_field() -> None:
    now, later = _action("now", T0), _action("later", T0 + timedelta(hours=3), Channel.EMAIL)
    decision = Decision(
        "dec-1",
        "r-1",
        "u-1",
        "cart_abandoned",
        T0,
        "v1",
        (now, later),
        (Rejection("x", "f", Channel.SMS, ActionClass.PROMOTIONAL, ReasonCode.NO_CONSENT, "no consent"),),
        replayed=True,
        exposures=(ExperimentExposure("exp", "arm", 0.25, 2, "seed", 0.5, True, later),),
        cancelled=(
            Cancellation("dec-0", "old", "f", Channel.PUSH, ActionClass.TRIGGERED, T0, "purchased", 7),
        ),
    )
    msg = convert.decision_to_proto(decision)
    assert (msg.decision_id, msg.catalog_version, msg.replayed) == ("dec-1", "v1", True)
    assert msg.occurred_at == _stamp(T0)
    assert [(a.action_id, a.send_at) for a in msg.actions] == [
        ("now", _stamp(T0)),
        ("later", _stamp(T0 + timedelta(hours=3))),
    ]
    first = msg.actions[0]
    assert (first.flow, first.channel, first.action_class, first.score, first.send_time) == (
        "cart_recovery",
        pb.CHANNEL_ONSITE,
        pb.ACTION_CLASS_TRIGGERED,
        2.5,
        pb.SEND_TIME_SOURCE_PERSONAL,
    )
    assert dict(first.parameters) == {"placement": "banner"}
    assert [(r.action_id, r.reason, r.detail) for r in msg.rejected] == [
        ("x", pb.REASON_CODE_NO_CONSENT, "no consent")
    ]
    (assignment,) = msg.assignments
    assert (assignment.experiment_id, assignment.arm_id, assignment.held_out, assignment.action_id) == (
        "exp",
        "arm",
        True,
        "later",
    )
    assert assignment.send_at == _stamp(T0 + timedelta(hours=3)) and assignment.channel == pb.CHANNEL_EMAIL
    (cancelled,) = msg.cancelled
    assert (cancelled.decision_id, cancelled.action_id, cancelled.send_at) == ("dec-0", "old", _stamp(T0))


def test_empty_parts_are_left_unset() -> None:
    decision = Decision("dec-2", "r-2", "u-2", "t", T0, "v1", (), ())
    msg = convert.decision_to_proto(decision)
    assert msg == pb.NextActionResponse(
        decision_id="dec-2", catalog_version="v1", occurred_at=_stamp(T0), replayed=False
    )
