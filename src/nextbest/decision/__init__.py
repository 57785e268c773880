"""The decision pipeline: one module per stage, in the order data flows (see ``engine``)."""

from nextbest.decision.engine import DecisionEngine, new_decision_id, request_fingerprint, utc_now

__all__ = ["DecisionEngine", "new_decision_id", "request_fingerprint", "utc_now"]
