"""Arbitration's send-time policy on hand-built histories: cancelled and preempted sends free the cap,
actions chosen earlier in the same decision count, an action that cannot wait out quiet hours is refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from nextbest.catalog import Action, Cap, CompiledRule, ContactPolicy, Flow, QuietHours
from nextbest.decision.arbitration import arbitrate
from nextbest.decision.candidates import Candidate
from nextbest.decision.contact import ContactLog, preemptions
from nextbest.decision.scoring import ScoredCandidate
from nextbest.domain import ActionClass, Channel, ReasonCode, SendTimeSource
from nextbest.models.send_time import HOURS_OF_WEEK, Timing
from nextbest.state import Journey, PastExposure

NOW = datetime(2026, 11, 2, 12, tzinfo=UTC)
FLOWS = {
    "promo": Flow("promo", 10, frozenset(), frozenset(), action_class=ActionClass.PROMOTIONAL),
    "cart": Flow("cart", 80, frozenset(), frozenset(), action_class=ActionClass.TRIGGERED),
}
PROMO_DAILY = Cap("promo_daily", 1, timedelta(days=1), frozenset({ActionClass.PROMOTIONAL}))
UTC_ZONE = ZoneInfo("UTC")


def action(
    action_id: str, flow: str, cls: ActionClass, channel: Channel = Channel.EMAIL, **kw: object
) -> Action:
    return Action(
        action_id, flow, channel, cls, frozenset({"t"}), CompiledRule("true", None), timedelta(0),
        10.0, 0.1, 0.0, {}, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def scored(a: Action, score: float = 1.0, send_at: datetime = NOW) -> ScoredCandidate:
    return ScoredCandidate(Candidate.of(a, Journey(active=True)), score, send_at)


def past(a: Action, at: datetime, *, cancelled: bool = False, exposure_id: int = 1) -> PastExposure:
    return PastExposure("d0", a.id, a.flow, a.channel, a.action_class, "t", at, at, exposure_id, cancelled)


PROMO = action("promo_email", "promo", ActionClass.PROMOTIONAL)
OTHER_PROMO = action("promo_email_2", "promo", ActionClass.PROMOTIONAL, Channel.SMS)
CART = action("cart_email", "cart", ActionClass.TRIGGERED)


def log(*history: PastExposure, policy: ContactPolicy | None = None) -> ContactLog:
    return ContactLog(policy or ContactPolicy(caps=(PROMO_DAILY,)), history, NOW, UTC_ZONE)


def test_a_send_in_the_window_caps_and_a_cancelled_one_does_not() -> None:
    sent = past(PROMO, NOW - timedelta(hours=3))
    chosen, rejected = arbitrate([scored(PROMO)], FLOWS, 1, log(sent))
    assert chosen == [] and rejected[0].reason is ReasonCode.FREQUENCY_CAP
    cancelled = past(PROMO, NOW - timedelta(hours=3), cancelled=True)
    chosen, _ = arbitrate([scored(PROMO)], FLOWS, 1, log(cancelled))
    assert [c.action.id for c in chosen] == ["promo_email"]


def test_actions_chosen_earlier_in_the_decision_count_against_the_cap() -> None:
    chosen, rejected = arbitrate([scored(PROMO, 2.0), scored(OTHER_PROMO, 1.0)], FLOWS, 2, log())
    assert [c.action.id for c in chosen] == ["promo_email"]
    assert [(r.action_id, r.reason) for r in rejected] == [("promo_email_2", ReasonCode.FREQUENCY_CAP)]


def test_a_higher_priority_winner_preempts_pending_lower_actions_which_then_do_not_count() -> None:
    pending_promo = past(PROMO, NOW + timedelta(hours=2), exposure_id=7)
    contact = log(
        pending_promo,
        policy=ContactPolicy(
            caps=(
                Cap("any", 1, timedelta(days=1), frozenset({ActionClass.TRIGGERED, ActionClass.PROMOTIONAL})),
            )
        ),
    )
    chosen, _ = arbitrate([scored(CART)], FLOWS, 1, contact)
    assert [c.action.id for c in chosen] == ["cart_email"]
    (cancelled,) = preemptions(chosen, contact, FLOWS, "d1")
    assert (cancelled.exposure_id, cancelled.action_id) == (7, "promo_email")
    # The reverse never happens: a promotion does not preempt a pending cart reminder.
    pending_cart = past(CART, NOW + timedelta(hours=2), exposure_id=8)
    assert preemptions([scored(PROMO)], log(pending_cart), FLOWS, "d2") == []


def test_an_action_that_cannot_wait_out_quiet_hours_is_refused() -> None:
    night = ContactPolicy(quiet_hours={Channel.SMS: QuietHours(time(21), time(8), frozenset(ActionClass))})
    late = datetime(2026, 11, 2, 22, tzinfo=UTC)
    now_only = action(
        "flash_sms", "promo", ActionClass.PROMOTIONAL, Channel.SMS, send_window=timedelta(hours=1)
    )
    contact = ContactLog(night, (), late, UTC_ZONE)
    chosen, rejected = arbitrate([scored(now_only, send_at=late)], FLOWS, 1, contact)
    assert chosen == [] and rejected[0].reason is ReasonCode.QUIET_HOURS
    assert "until 2026-11-03 08:00Z" in rejected[0].detail
    patient = action("sms", "promo", ActionClass.PROMOTIONAL, Channel.SMS)
    (deferred,) = arbitrate([scored(patient, send_at=late)], FLOWS, 1, contact)[0]
    assert deferred.send_at == datetime(2026, 11, 3, 8, tzinfo=UTC)


def _peaked_at(at: datetime) -> Timing:
    probs = np.full(HOURS_OF_WEEK, 0.5 / (HOURS_OF_WEEK - 1))
    probs[at.weekday() * 24 + at.hour] = 0.5
    return Timing(probs, SendTimeSource.PERSONAL)


def test_a_send_time_arm_is_sent_only_if_the_fixed_hour_arm_would_be() -> None:
    """Yesterday's promotion caps today's until 20 h after it; the customer's best hour (5 h from now)
    is past the cap, the due time is not. Alone, the best hour is taken; in a send-time experiment
    whose other arm sends when due, the unit must get the action in both arms or in neither."""
    promo = action("promo_email", "promo", ActionClass.PROMOTIONAL, send_time="optimize")
    history = log(past(promo, NOW - timedelta(hours=20)))
    best = NOW + timedelta(hours=5)
    alone = replace(scored(promo), timing=_peaked_at(best), send_time=SendTimeSource.PERSONAL)
    chosen, rejected = arbitrate([alone], FLOWS, 1, history)
    assert [c.send_at for c in chosen] == [best], rejected
    candidate = replace(alone.candidate, send_time="optimize", send_times=("fixed", "optimize"))
    in_test = replace(alone, candidate=candidate)
    chosen, rejected = arbitrate([in_test], FLOWS, 1, history)
    assert chosen == [] and rejected[0].reason is ReasonCode.FREQUENCY_CAP
    assert "as another arm of its experiment sends it (when due)" in rejected[0].detail
    fixed_arm = replace(scored(promo), candidate=replace(candidate, send_time="fixed"))
    chosen, rejected = arbitrate([fixed_arm], FLOWS, 1, history)
    assert chosen == [] and rejected[0].reason is ReasonCode.FREQUENCY_CAP
