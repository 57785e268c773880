"""The hand-written __init__ of the frozen dataclasses built on every decision (``Decision``,
``ChosenAction``, ``Journey``, ``ContactLog``): the generated one's parameters, in order, with its
defaults, every field set."""

from __future__ import annotations

import inspect
import pickle
from dataclasses import MISSING, FrozenInstanceError, fields, replace
from datetime import UTC, datetime

import pytest

from nextbest.decision.contact import ContactLog
from nextbest.domain import (
    ActionClass,
    Channel,
    ChosenAction,
    Decision,
    ReasonCode,
    Rejection,
    SendTimeSource,
)
from nextbest.state import Journey

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("cls", [Decision, ChosenAction, Journey, ContactLog])
def test_init_takes_the_fields_in_order_with_their_defaults(cls: type) -> None:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in fields(cls)]
    for p, f in zip(params, fields(cls), strict=True):
        if f.default is not MISSING:
            assert p.default == f.default, f.name
        elif f.default_factory is not MISSING:
            assert p.default is None, f.name  # None: a fresh default_factory() value
        else:
            assert p.default is inspect.Parameter.empty, f.name


def _chosen() -> ChosenAction:
    return ChosenAction("a", "f", Channel.EMAIL, ActionClass.PROMOTIONAL, NOW, {"k": "v"}, 0.25)


def test_every_field_is_set_and_stays_frozen() -> None:
    chosen = _chosen()
    assert (chosen.send_time, chosen.features) == (SendTimeSource.FIXED, b"")
    rejected = (Rejection("b", "f", Channel.SMS, ActionClass.PROMOTIONAL, ReasonCode.RULE_FALSE, "no"),)
    d = Decision("d", "r", "u", "t", NOW, "v1", (chosen,), rejected)
    assert (d.replayed, d.exposures, d.cancelled, d.models) == (False, (), (), {})
    assert Decision("d", "r", "u", "t", NOW, "v1", (), ()).models is not d.models  # a fresh map each
    full = Decision("d", "r", "u", "t", NOW, "v1", (chosen,), rejected, True, (), (), {"propensity": "p1"})
    assert [getattr(full, f.name) for f in fields(Decision)] == [
        "d",
        "r",
        "u",
        "t",
        NOW,
        "v1",
        (chosen,),
        rejected,
        True,
        (),
        (),
        {"propensity": "p1"},
    ]
    with pytest.raises(FrozenInstanceError):
        full.user_id = "x"  # type: ignore[misc]
    assert replace(full, user_id="x") == Decision(
        "d", "r", "x", "t", NOW, "v1", (chosen,), rejected, True, (), (), {"propensity": "p1"}
    )
    assert pickle.loads(pickle.dumps(full)) == full
    assert chosen == _chosen()


def test_journeys_set_every_field() -> None:
    values = (True, NOW, 2, None, None, True, frozenset({0, 1}), NOW, None)
    journey = Journey(*values)
    assert tuple(getattr(journey, f.name) for f in fields(Journey)) == values
    assert Journey(active=False) == Journey(False, None, 0, None, None, False, frozenset(), None, None)
    assert hash(journey) == hash(Journey(*values))
    with pytest.raises(FrozenInstanceError):
        journey.active = False  # type: ignore[misc]
