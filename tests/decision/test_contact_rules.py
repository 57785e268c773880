"""The policy's time arithmetic: exact rolling-window caps (against brute force) and quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from nextbest.catalog import Cap, QuietHours
from nextbest.decision.contact import cap_violation, defer_for_quiet_hours
from nextbest.domain import ActionClass, Channel

T0 = datetime(2026, 11, 2, tzinfo=UTC)
MARKETING = frozenset({ActionClass.TRIGGERED, ActionClass.PROMOTIONAL})


def brute_force_ok(sends: list[datetime], window: timedelta, limit: int) -> bool:
    """Every window [s, s + W) starting at a send holds at most ``limit`` sends (the fullest window
    always starts at one)."""
    return all(sum(1 for t in sends if s <= t < s + window) <= limit for s in sends)


@given(
    st.lists(st.integers(0, 14 * 24), max_size=12),
    st.integers(0, 14 * 24),
    st.integers(1, 4),
    st.sampled_from([1, 24, 72, 168]),
)
def test_a_send_fits_a_cap_exactly_when_no_window_would_exceed_it(
    existing: list[int], new: int, limit: int, hours: int
) -> None:
    window = timedelta(hours=hours)
    sends = sorted(T0 + timedelta(hours=h) for h in existing)
    if not brute_force_ok(sends, window, limit):
        return  # the policy never lets history get there
    cap = Cap("c", limit, window, MARKETING)
    at = T0 + timedelta(hours=new)
    violation = cap_violation(sends, at, cap)
    assert (violation is None) == brute_force_ok([*sends, at], window, limit)
    if violation is not None:
        assert violation.count == limit


def test_the_window_is_half_open_and_the_detail_says_how_full_it_is() -> None:
    cap = Cap("promo", 1, timedelta(days=1), frozenset({ActionClass.PROMOTIONAL}))
    assert cap_violation([T0], T0 + timedelta(days=1), cap) is None
    violation = cap_violation([T0], T0 + timedelta(hours=23), cap)
    assert violation is not None
    assert violation.detail() == "promotional cap 1/1d reached: 1 send since 2026-11-02 00:00Z"


def test_caps_never_apply_to_transactional_and_respect_channels() -> None:
    sms = Cap("sms", 1, timedelta(days=1), MARKETING, frozenset({Channel.SMS}))
    assert sms.applies(ActionClass.TRIGGERED, Channel.SMS)
    assert not sms.applies(ActionClass.TRIGGERED, Channel.EMAIL)
    everything = Cap("all", 1, timedelta(days=1), frozenset(ActionClass))
    assert not everything.applies(ActionClass.TRANSACTIONAL, Channel.EMAIL)


NIGHT = QuietHours(time(21), time(8), MARKETING)
PARIS = ZoneInfo("Europe/Paris")


def test_quiet_hours_crossing_midnight_defer_to_their_end() -> None:
    evening = datetime(2026, 11, 2, 22, 30, tzinfo=PARIS).astimezone(UTC)
    send_at, end = defer_for_quiet_hours(evening, NIGHT, PARIS, timedelta(hours=12))
    assert send_at == end == datetime(2026, 11, 3, 8, 0, tzinfo=PARIS).astimezone(UTC)
    early = datetime(2026, 11, 3, 6, 0, tzinfo=PARIS).astimezone(UTC)
    assert defer_for_quiet_hours(early, NIGHT, PARIS, timedelta(hours=12))[0] == datetime(
        2026, 11, 3, 8, 0, tzinfo=PARIS
    ).astimezone(UTC)
    noon = datetime(2026, 11, 3, 12, 0, tzinfo=PARIS).astimezone(UTC)
    assert defer_for_quiet_hours(noon, NIGHT, PARIS, timedelta(hours=12)) == (noon, None)


def test_an_action_that_cannot_wait_is_refused() -> None:
    evening = datetime(2026, 11, 2, 22, 0, tzinfo=PARIS).astimezone(UTC)
    send_at, end = defer_for_quiet_hours(evening, NIGHT, PARIS, timedelta(hours=2))
    assert send_at is None and end == datetime(2026, 11, 3, 8, 0, tzinfo=PARIS).astimezone(UTC)


def test_quiet_hours_follow_daylight_saving_time() -> None:
    # 2026-03-29: Paris moves from UTC+1 to UTC+2 at 02:00. 23:00 the evening before ends at 08:00 CEST.
    before = datetime(2026, 3, 28, 23, 0, tzinfo=PARIS).astimezone(UTC)
    send_at, _ = defer_for_quiet_hours(before, NIGHT, PARIS, timedelta(hours=12))
    assert send_at == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)


@given(st.integers(0, 7 * 24 * 60))
def test_no_deferred_send_lands_inside_quiet_hours(minutes: int) -> None:
    at = T0 + timedelta(minutes=minutes)
    send_at, _ = defer_for_quiet_hours(at, NIGHT, PARIS, timedelta(hours=12))
    assert send_at is not None and send_at >= at
    assert NIGHT.end_of_quiet(send_at.astimezone(PARIS)) is None
