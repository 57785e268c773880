from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from nextbest.catalog import Flow
from nextbest.decision.journeys import journey_in
from nextbest.domain import ActionClass, Channel, EventType
from nextbest.state import CustomerSnapshot, CustomerState, PastExposure

T0 = datetime(2026, 11, 1, tzinfo=UTC)
CART = Flow("cart", 80, frozenset({"cart_abandoned"}), frozenset({EventType.ORDER_PLACED}))


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def sent(hours: float, trigger: str = "cart_abandoned", flow: str = "cart") -> PastExposure:
    return PastExposure("d", "a", flow, Channel.EMAIL, ActionClass.TRIGGERED, trigger, h(hours), h(hours))


def snap(history: list[PastExposure], **last: float) -> CustomerSnapshot:
    events = MappingProxyType({EventType(k): h(v) for k, v in last.items()})
    return CustomerSnapshot(CustomerState("u", last_events=events), tuple(history))


def test_an_entry_trigger_starts_a_journey_now_whatever_came_before() -> None:
    j = journey_in(CART, snap([], order_placed=1), "cart_abandoned", h(5))
    assert j.active and j.entered_at == h(5) and j.steps_sent == 0


def test_a_follow_up_continues_the_journey_started_by_a_decision() -> None:
    j = journey_in(CART, snap([sent(1), sent(2, trigger="scheduled")]), "scheduled", h(30))
    assert j.active and j.entered_at == h(1) and j.steps_sent == 2
    assert j.hours_since_entry(h(30)) == 29


def test_a_recorded_entry_event_starts_a_journey_too() -> None:
    j = journey_in(CART, snap([], cart_abandoned=3), "scheduled", h(30))
    assert j.active and j.entered_at == h(3) and j.steps_sent == 0


def test_an_exit_event_after_entry_ends_the_journey() -> None:
    j = journey_in(CART, snap([sent(1)], order_placed=2), "scheduled", h(30))
    assert not j.active and j.exit_event is EventType.ORDER_PLACED and j.exited_at == h(2)


def test_an_exit_before_entry_or_in_the_future_does_not_count() -> None:
    assert journey_in(CART, snap([sent(5)], order_placed=2), "scheduled", h(30)).active
    assert journey_in(CART, snap([sent(5)], order_placed=40), "scheduled", h(30)).active


def test_a_send_for_a_later_trigger_decided_first_is_the_journey_already_entered() -> None:
    """Two cart abandonments decided out of their order (a late call, or two replicas): the send for the
    later one is on record when the earlier one is decided, and counts as entered at the earlier's time."""
    cart = replace(CART, reentry=timedelta(days=3))
    j = journey_in(cart, snap([sent(5.001)]), "cart_abandoned", h(5))
    assert j.active and not j.new and j.entered_at == h(5) and j.steps_sent == 1


def test_no_entry_means_no_journey() -> None:
    j = journey_in(CART, snap([sent(1, flow="other")]), "scheduled", h(30))
    assert not j.active and j.exit_event is None and j.hours_since_entry(h(30)) == -1.0


def test_the_book_answers_what_journey_in_answers_sharing_the_journeys_entered_now() -> None:
    from pathlib import Path

    from nextbest.catalog import bundled_catalog_path, load_catalog
    from nextbest.decision.journeys import JourneyBook

    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "catalog_20.yaml"
    for catalog in (load_catalog(bundled_catalog_path()), load_catalog(bench)):
        for trigger in sorted(catalog.triggers):
            for snapshot in (snap([]), snap([], order_placed=1)):
                book = JourneyBook(catalog, snapshot, trigger, h(5))
                journeys = {f: book[f] for f in catalog.flows}
                for flow_id, journey in journeys.items():
                    assert journey == journey_in(catalog.flows[flow_id], snapshot, trigger, h(5)), flow_id
                entered = [(catalog.flows[f].duration, j) for f, j in journeys.items() if j.new]
                assert entered or trigger not in {t for f in catalog.flows.values() for t in f.entry_triggers}
                for duration, journey in entered:
                    assert journey.ends_at == h(5) + duration
                    assert all(j == journey for d, j in entered if d == duration)
    # The benchmark's trigger enters its five flows, of one duration: one journey object for them all.
    book = JourneyBook(load_catalog(bench), snap([]), "bench_trigger", h(5))
    assert len({id(book[f]) for f in load_catalog(bench).flows}) == 1
