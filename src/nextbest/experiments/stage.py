"""The experiments stage: assign the unit in every active experiment covering an eligible candidate and
apply the arm (parameters, delay, channel, or hold-out).

It runs after the hard gates, so only units that could have been treated are assigned. An arm that moves
an action to another channel sends it back through that channel's gates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from nextbest.catalog import Catalog
from nextbest.domain import Rejection
from nextbest.eligibility import Candidate, check_gates, rejection
from nextbest.experiments.model import Assignment, Experiment, assign
from nextbest.state import CustomerState

__all__ = ["apply_experiments"]


def apply_experiments(
    candidates: Sequence[Candidate],
    catalog: Catalog,
    state: CustomerState,
    trigger: str,
    now: datetime,
) -> tuple[list[Candidate], list[Rejection]]:
    active = [e for e in catalog.experiments if e.active(now)]
    if not active:
        return list(candidates), []
    assignments: dict[str, Assignment] = {}

    def assignment(experiment: Experiment) -> Assignment:
        if experiment.id not in assignments:
            assignments[experiment.id] = assign(experiment, state.user_id)
        return assignments[experiment.id]

    treated: list[Candidate] = []
    rejected: list[Rejection] = []
    for candidate in candidates:
        action = candidate.action
        mine = [
            a
            for e in active
            if e.covers(action.id, action.flow, action.action_class) and (a := assignment(e)).arm is not None
        ]
        if not mine:
            treated.append(candidate)
            continue
        held_out_by = next((a for a in mine if a.held_out), None)
        channel, parameters, delay = candidate.channel, dict(candidate.parameters), candidate.delay
        for a in mine:
            arm = a.arm
            if arm is None:
                continue
            channel = arm.channel or channel
            parameters.update(arm.parameters or {})
            delay = arm.delay if arm.delay is not None else delay
        if channel is not action.channel:
            flow = catalog.flows[action.flow]
            failure = check_gates(
                replace(action, channel=channel),
                catalog.channels[channel],
                state,
                candidate.journey,
                entry_trigger=trigger in flow.entry_triggers,
            )
            if failure is not None:
                moved = f"arm moved it to {channel}: {failure.detail}"
                rejected.append(rejection(action, failure.reason, moved, channel))
                continue
        treated.append(
            replace(
                candidate,
                channel=channel,
                parameters=parameters,
                delay=delay,
                assignments=tuple(mine),
                held_out_by=held_out_by,
            )
        )
    return treated, rejected
