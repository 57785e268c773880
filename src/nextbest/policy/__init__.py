"""Contact policy: frequency caps, quiet hours, engagement suppression, cooldowns and the pending queue."""

from nextbest.policy.model import Cap, ContactPolicy, Engagement, QuietHours
from nextbest.policy.rules import cap_violation, defer_for_quiet_hours, fits_cap

__all__ = [
    "Cap",
    "ContactPolicy",
    "Engagement",
    "QuietHours",
    "cap_violation",
    "defer_for_quiet_hours",
    "fits_cap",
]
