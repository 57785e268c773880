from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.arbitration import arbitrate, rank_key
from nextbest.catalog import Action, CompiledRule, Flow
from nextbest.domain import ActionClass, Channel, ReasonCode
from nextbest.eligibility import Candidate
from nextbest.scoring import ScoredCandidate
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
