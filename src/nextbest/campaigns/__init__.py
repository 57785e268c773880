"""Outbound decisions for whole audiences: segments, and campaigns that decide for a segment's members."""

from nextbest.campaigns.campaign import (
    RUN_ID,
    RUN_ID_RULE,
    CampaignPlan,
    CampaignRun,
    OutsideRunWindowError,
    campaign_request,
    iter_campaign,
    plan_campaign,
    run_campaign,
)
from nextbest.campaigns.segments import SegmentCount, count_segment, in_segment, segment_members
from nextbest.campaigns.targeting import TARGETING_RULES, MemberEstimate, TargetingError, estimate

__all__ = [
    "RUN_ID",
    "RUN_ID_RULE",
    "TARGETING_RULES",
    "CampaignPlan",
    "CampaignRun",
    "MemberEstimate",
    "OutsideRunWindowError",
    "SegmentCount",
    "TargetingError",
    "campaign_request",
    "count_segment",
    "estimate",
    "in_segment",
    "iter_campaign",
    "plan_campaign",
    "run_campaign",
    "segment_members",
]
