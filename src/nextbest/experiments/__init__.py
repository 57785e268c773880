"""Experiments: hashing, bucketing, holdouts, arms, namespaces."""

from nextbest.experiments.hashing import hash_unit
from nextbest.experiments.model import Arm, Assignment, Experiment, assign

__all__ = ["Arm", "Assignment", "Experiment", "assign", "hash_unit"]
