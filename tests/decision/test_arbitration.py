from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.catalog import Action, CompiledRule, Flow
from nextbest.decision.arbitration import arbitrate, rank_constants, rank_key
from nextbest.decision.candidates import Candidate
from nextbest.decision.scoring import ScoredCandidate
from nextbest.domain import ActionClass, Channel, ReasonCode
from nextbest.state import Journey

NOW = datetime(2026, 11, 1, tzinfo=UTC)
FLOWS = {f"f{i}": Flow(f"f{i}", i * 10, frozenset(), frozenset()) for i in range(4)}


@st.composite
def candidates(draw: st.DrawFn) -> list[ScoredCandidate]:
    n = draw(st.integers(0, 15))
    out = []
    for i in range(n):
        action = Action(
            f"a{i}",
            draw(st.sampled_from(sorted(FLOWS))),
            draw(st.sampled_from(list(Channel))),
            draw(st.sampled_from(list(ActionClass))),
            frozenset({"t"}),
            CompiledRule("true", None),
            timedelta(0),
            1.0,
            0.1,
            0.0,
            {},
        )
        out.append(ScoredCandidate(Candidate.of(action, Journey(active=True)), draw(st.floats(0, 100)), NOW))
    return out


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(candidates(), st.integers(1, 5))
def test_arbitration_invariants(cands: list[ScoredCandidate], max_actions: int) -> None:
    chosen, rejected = arbitrate(cands, FLOWS, max_actions)
    assert len(chosen) <= max_actions
    assert len({a.channel for a in chosen}) == len(chosen), "one action per channel"
    assert sorted([c.action.id for c in chosen] + [r.action_id for r in rejected]) == sorted(
        c.action.id for c in cands
    ), "every candidate is chosen or rejected, exactly once"
    by_id = {c.action.id: c for c in cands}
    keys = [rank_key(c, FLOWS) for c in chosen]
    assert keys == sorted(keys), "chosen in rank order: class, then score"
    ranks = [c.action.action_class.rank for c in chosen]
    assert ranks == sorted(ranks)
    taken = {c.channel: c for c in chosen}
    for r in rejected:
        if r.reason is ReasonCode.LOWER_PRIORITY:
            assert rank_key(taken[r.channel], FLOWS) < rank_key(by_id[r.action_id], FLOWS)
        else:
            assert r.reason is ReasonCode.MAX_ACTIONS and len(chosen) == max_actions
    # Nothing left out that could have been taken: a free channel and a free slot mean it was chosen.
    if len(chosen) < max_actions:
        assert {c.action.channel for c in cands} == set(taken)


@settings(max_examples=200, deadline=None)
@given(candidates(), st.integers(1, 5))
def test_rank_constants_order_as_rank_key(cands: list[ScoredCandidate], max_actions: int) -> None:
    """The engine's precomputed ranks give the same winners and rejections (texts included)."""
    ranks = rank_constants(FLOWS, [c.action for c in cands])
    assert arbitrate(cands, FLOWS, max_actions, ranks=ranks) == arbitrate(cands, FLOWS, max_actions)


def _candidate(action_id: str, channel: Channel, score: float, **fields: object) -> ScoredCandidate:
    action = Action(
        action_id, "f1", channel, ActionClass.TRIGGERED, frozenset({"t"}), CompiledRule("true", None),
        timedelta(0), 1.0, 0.1, 0.0, {},
    )  # fmt: skip
    candidate = Candidate.of(action, Journey(active=True))
    return ScoredCandidate(replace(candidate, **fields), score, NOW)  # type: ignore[arg-type]


def test_an_action_an_experiment_moves_holds_every_arms_channel() -> None:
    """The winner's other arm sends it by SMS, so no other action takes SMS in this decision, whichever
    arm the unit is in: what else the unit gets must not depend on its arm either."""
    moved = _candidate(
        "reminder", Channel.EMAIL, 9.0, variants=((Channel.EMAIL, timedelta(0)), (Channel.SMS, timedelta(0)))
    )
    chosen, rejected = arbitrate([moved, _candidate("nudge", Channel.SMS, 5.0)], FLOWS, max_actions=3)
    assert [c.action.id for c in chosen] == ["reminder"]
    (lost,) = rejected
    assert (lost.action_id, lost.reason) == ("nudge", ReasonCode.LOWER_PRIORITY)
    assert lost.channel is Channel.SMS and "sms already taken by reminder" in lost.detail
