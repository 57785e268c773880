"""PlanCampaign's answer carries the plan's incremental estimate and the holdout's MDE when the plan has
them, the same figures the CLI prints (``nextbest campaign plan --format json``)."""

from __future__ import annotations

from collections import Counter

import pytest

from nextbest.campaign_cli import _plan_figures
from nextbest.campaigns.campaign import CampaignPlan
from nextbest.campaigns.segments import SegmentCount
from nextbest.server.servicer import _plan_to_proto


def _plan() -> CampaignPlan:
    return CampaignPlan(
        campaign="winback",
        segment=SegmentCount("lapsed", scanned=1_000, members=400),
        targeting="uplift",
        decided=300,
        sends=240,
        held_out=60,
        nothing=40,
        not_targeted=60,
        by_channel=Counter({"email": 240}),
        estimated=240,
        incremental_conversions=12.5,
        incremental_revenue=850.0,
        cost=96.0,
        discount_spend=120.0,
        variance_conversions=11.0,
        variance_revenue=52_000.0,
        reached_conversions=30.0,
        reached_revenue=2_000.0,
        reached_revenue_square=450_000.0,
        reached_estimated=300,
        model_error=0.01,
        value_at_stake=68.0 * 240,
    )


def test_the_estimate_and_the_mde_reach_the_caller_as_the_cli_prints_them() -> None:
    plan = _plan()
    message = _plan_to_proto(plan)
    figures = _plan_figures(plan)
    incremental = figures["incremental"]
    assert (message.decided, message.not_targeted) == (300, 60)
    assert message.expected_discount_spend == pytest.approx(120.0)
    assert message.cost == pytest.approx(96.0)
    assert message.HasField("incremental")
    estimate = message.incremental
    assert estimate.sends_estimated == incremental["sends_estimated"] == 240
    assert estimate.conversions == pytest.approx(incremental["conversions"], abs=1e-4)
    assert [estimate.conversions_low, estimate.conversions_high] == pytest.approx(
        incremental["conversions_95"], abs=1e-4
    )
    assert estimate.revenue == pytest.approx(incremental["revenue"], abs=1e-4)
    assert [estimate.revenue_low, estimate.revenue_high] == pytest.approx(incremental["revenue_95"], abs=1e-4)
    assert estimate.net_revenue == pytest.approx(incremental["net_revenue"], abs=1e-4)
    assert estimate.revenue_low < estimate.revenue < estimate.revenue_high
    assert message.mde_conversion == pytest.approx(figures["holdout"]["mde_conversion"])
    assert message.mde_revenue_per_member == pytest.approx(figures["holdout"]["mde_revenue_per_member"])
    assert message.mde_conversion > 0


def test_a_plan_without_an_estimate_says_so_by_absence() -> None:
    plan = CampaignPlan(campaign="promo", segment=SegmentCount("all", scanned=10, members=10), sends=4)
    message = _plan_to_proto(plan)
    assert not message.HasField("incremental")
    assert not message.HasField("mde_conversion")
