"""Experiments as the pipeline sees them, and assignment: a pure function of (unit, seed, hash version)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from nextbest.domain import ActionClass, Channel
from nextbest.experiments.hashing import Range, choose_variation, get_bucket_ranges, hash_unit, in_namespace

__all__ = ["Arm", "Assignment", "Experiment", "assign"]


@dataclass(frozen=True, slots=True)
class Arm:
    id: str
    weight: float
    no_action: bool = False
    parameters: Mapping[str, str] | None = None
    delay: timedelta | None = None
    channel: Channel | None = None
    # Overrides the action's send time: "optimize" (the customer's best hour) or "fixed" (when due).
    send_time: Literal["fixed", "optimize"] | None = None


@dataclass(frozen=True, slots=True)
class Namespace:
    id: str
    start: float
    end: float


@dataclass(frozen=True)
class Experiment:
    id: str
    seed: str
    hash_version: int
    arms: tuple[Arm, ...]
    coverage: float = 1.0
    namespace: Namespace | None = None
    flows: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    classes: frozenset[ActionClass] = frozenset()
    start: datetime | None = None
    stop: datetime | None = None
    description: str = ""

    @property
    def sets_send_time(self) -> bool:
        """Whether an arm overrides the send time of the actions it covers."""
        return any(a.send_time is not None for a in self.arms)

    @property
    def ranges(self) -> list[Range]:
        return get_bucket_ranges(len(self.arms), self.coverage, [a.weight for a in self.arms])

    @property
    def fingerprint(self) -> str:
        """What may not change while the experiment runs: its arms, their weights, coverage and namespace."""
        shape = {
            # An arm's send time is part of its shape only when it sets one (earlier fingerprints hold).
            "arms": [
                [a.id, a.weight, a.no_action, *([a.send_time] if a.send_time else [])] for a in self.arms
            ],
            "coverage": self.coverage,
            "namespace": [self.namespace.id, self.namespace.start, self.namespace.end]
            if self.namespace
            else None,
        }
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]

    def active(self, now: datetime) -> bool:
        return (self.start is None or self.start <= now) and (self.stop is None or now < self.stop)

    def covers(self, action_id: str, flow: str, action_class: ActionClass) -> bool:
        """Whether a candidate is in scope. Transactional actions never are."""
        return (
            action_class is not ActionClass.TRANSACTIONAL
            and (not self.flows or flow in self.flows)
            and (not self.actions or action_id in self.actions)
            and (not self.classes or action_class in self.classes)
        )


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a unit falls in an experiment. ``arm`` is None when the unit is not in it (outside the
    namespace slice or the coverage); ``reason`` says why, for support questions."""

    experiment_id: str
    seed: str
    hash_version: int
    bucket: float
    arm: Arm | None
    probability: float
    reason: str

    @property
    def held_out(self) -> bool:
        return self.arm is not None and self.arm.no_action

    @property
    def arm_id(self) -> str:
        return self.arm.id if self.arm is not None else ""


def assign(experiment: Experiment, unit: str) -> Assignment:
    """Deterministic assignment, identical to a GrowthBook SDK's for the same seed and hash version."""
    bucket = hash_unit(experiment.seed, unit, experiment.hash_version)
    if bucket is None:  # the catalog only admits versions 1 and 2
        raise ValueError(f"unknown hash version {experiment.hash_version}")

    def result(arm: Arm | None, probability: float, reason: str) -> Assignment:
        return Assignment(
            experiment.id, experiment.seed, experiment.hash_version, bucket, arm, probability, reason
        )

    ns = experiment.namespace
    if ns is not None and not in_namespace(unit, (ns.id, ns.start, ns.end)):
        return result(None, 0.0, f"outside namespace {ns.id} [{ns.start:g}, {ns.end:g})")
    ranges = experiment.ranges
    index = choose_variation(bucket, ranges)
    if index < 0:
        return result(None, 0.0, f"bucket {bucket:.4f} outside the coverage {experiment.coverage:g}")
    arm = experiment.arms[index]
    start, end = ranges[index]
    return result(arm, arm.weight, f"bucket {bucket:.4f} in arm {arm.id} [{start:.4f}, {end:.4f})")
