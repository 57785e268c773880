"""Outbound decisions for whole audiences: segments (and, built on them, campaigns)."""

from nextbest.campaigns.segments import SegmentCount, count_segment, in_segment, segment_members

__all__ = ["SegmentCount", "count_segment", "in_segment", "segment_members"]
