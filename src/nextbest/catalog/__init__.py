"""Loading and validating the catalog; CEL rule compilation."""

from nextbest.catalog.loader import bundled_catalog_path, load_catalog, parse_catalog
from nextbest.catalog.model import Action, Campaign, Catalog, ChannelPolicy, Flow, Segment, Step
from nextbest.catalog.policy import Cap, ContactPolicy, Engagement, QuietHours
from nextbest.catalog.rules import CompiledRule, RuleEvaluationError

__all__ = [
    "Action",
    "Campaign",
    "Cap",
    "Catalog",
    "ChannelPolicy",
    "CompiledRule",
    "ContactPolicy",
    "Engagement",
    "Flow",
    "QuietHours",
    "RuleEvaluationError",
    "Segment",
    "Step",
    "bundled_catalog_path",
    "load_catalog",
    "parse_catalog",
]
