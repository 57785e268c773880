"""Assignment over many units: arm shares match the weights, namespaces exclude, coverage holds."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from nextbest.experiments import Arm, Experiment, assign
from nextbest.experiments.model import Namespace
from nextbest.stats.srm import srm_check

UNITS = [f"customer-{i}" for i in range(100_000)]


def experiment(**kw: object) -> Experiment:
    arms = (Arm("a", 0.2), Arm("b", 0.3), Arm("c", 0.5, no_action=True))
    return Experiment(**{"id": "exp", "seed": "exp-seed", "hash_version": 2, "arms": arms, **kw})  # type: ignore[arg-type]


def shares(exp: Experiment) -> dict[str, int]:
    counts: dict[str, int] = {}
    for unit in UNITS:
        arm = assign(exp, unit).arm
        if arm is not None:
            counts[arm.id] = counts.get(arm.id, 0) + 1
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("version", [1, 2])
def test_arm_shares_match_the_weights(version: int) -> None:
    exp = experiment(hash_version=version)
    counts = shares(exp)
    assert sum(counts.values()) == len(UNITS)
    result = srm_check(counts, {a.id: a.weight for a in exp.arms})
    assert not result.alarm and result.p_value > 0.001, counts


@pytest.mark.slow
def test_arm_shares_match_inside_a_namespace() -> None:
    exp = experiment(namespace=Namespace("checkout", 0.25, 0.75))
    counts = shares(exp)
    inside = sum(counts.values())
    # About half the units are in the namespace's slice (binomial, 5 standard deviations).
    assert abs(inside - 50_000) < 5 * math.sqrt(100_000 * 0.25)
    assert srm_check(counts, {a.id: a.weight for a in exp.arms}).p_value > 0.001


@pytest.mark.slow
def test_experiments_in_disjoint_namespace_ranges_never_share_a_unit() -> None:
    left = experiment(id="left", seed="left", namespace=Namespace("checkout", 0.0, 0.4))
    right = experiment(id="right", seed="right", namespace=Namespace("checkout", 0.4, 1.0))
    in_left = {u for u in UNITS if assign(left, u).arm is not None}
    in_right = {u for u in UNITS if assign(right, u).arm is not None}
    assert in_left and in_right
    assert not in_left & in_right
    assert len(in_left) + len(in_right) == len(UNITS)


@pytest.mark.slow
def test_coverage_keeps_that_share_of_units() -> None:
    exp = experiment(coverage=0.3)
    inside = sum(shares(exp).values())
    assert stats.binomtest(inside, len(UNITS), 0.3).pvalue > 0.001
    outside = next(u for u in UNITS if assign(exp, u).arm is None)
    assert "outside the coverage" in assign(exp, outside).reason


def test_probability_is_the_arm_weight_and_held_out_follows_the_arm() -> None:
    exp = experiment()
    for unit in UNITS[:200]:
        a = assign(exp, unit)
        assert a.arm is not None and a.probability == a.arm.weight
        assert a.held_out is (a.arm.id == "c")
        assert 0 <= a.bucket < 1


def test_srm_check_matches_a_hand_computed_chi_squared() -> None:
    result = srm_check({"a": 5_200, "b": 4_800}, {"a": 0.5, "b": 0.5})
    chi2 = (5_200 - 5_000) ** 2 / 5_000 + (4_800 - 5_000) ** 2 / 5_000
    assert result.chi2 == pytest.approx(chi2)
    assert result.p_value == pytest.approx(stats.chi2.sf(chi2, 1))
    assert result.alarm
    assert not srm_check({"a": 5_040, "b": 4_960}, {"a": 0.5, "b": 0.5}).alarm
    assert srm_check({}, {"a": 0.5, "b": 0.5}).error == "no units yet"
    assert srm_check({"zz": 3}, {"a": 0.5, "b": 0.5}).alarm
