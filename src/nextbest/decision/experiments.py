"""The experiments stage: assign the unit in every active experiment covering an eligible candidate and
apply the arm (parameters, delay, channel, send time, or hold-out).

It runs after the hard gates, so only units that could have been treated are assigned. Whether a unit
enters an experiment must not depend on the arm it falls in, or the arms would compare different units:
an experiment whose arms move the action to other channels takes in only the units that every arm's
channel can reach (consent, suppression); the others get the action as declared and are not assigned.
The candidate keeps what it was declared with (scoring ranks on it) and every arm's channel and delay
(arbitration checks the contact policy for each), so that what happens after assignment is the same
for every arm too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from nextbest.catalog import Catalog
from nextbest.decision.candidates import Candidate
from nextbest.decision.gates import check_gates
from nextbest.domain import Channel
from nextbest.experiments import Arm, Assignment, Experiment, assign
from nextbest.state import CustomerState

__all__ = ["apply_experiments"]


def apply_experiments(
    candidates: Sequence[Candidate],
    catalog: Catalog,
    state: CustomerState,
    trigger: str,
    now: datetime,
) -> list[Candidate]:
    """The candidates with the arms of the experiments they are in applied."""
    active = [e for e in catalog.experiments if e.active(now)]
    if not active:
        return list(candidates)
    assignments: dict[str, Assignment] = {}

    def assignment(experiment: Experiment) -> Assignment:
        if experiment.id not in assignments:
            assignments[experiment.id] = assign(experiment, state.user_id)
        return assignments[experiment.id]

    treated: list[Candidate] = []
    for candidate in candidates:
        action = candidate.action
        mine = [
            (e, a)
            for e in active
            if e.covers(action.id, action.flow, action.action_class)
            and (a := assignment(e)).arm is not None
            and _reaches_every_arm(e, candidate, catalog, state, trigger)
        ]
        if not mine:
            treated.append(candidate)
            continue
        channel, parameters, delay = candidate.channel, dict(candidate.parameters), candidate.delay
        send_time = candidate.send_time
        send_times: set[str] = set()
        # Every (channel, delay) the unit could have been sent with, over every arm of each experiment
        # that moves the action, composed in the same order as the unit's own arms.
        variants = {(channel, delay)}
        for experiment, a in mine:
            arm = a.arm
            assert arm is not None  # filtered above
            channel = arm.channel or channel
            parameters.update(arm.parameters or {})
            delay = arm.delay if arm.delay is not None else delay
            send_time = arm.send_time or send_time
            send_times.update(a.send_time for a in experiment.arms if a.send_time is not None)
            if _moves(experiment):
                variants = {_variant(other, c, d) for c, d in variants for other in experiment.arms}
        moved = (channel, delay) != (candidate.channel, candidate.delay)
        treated.append(
            replace(
                candidate,
                channel=channel,
                parameters=parameters,
                delay=delay,
                assignments=tuple(a for _, a in mine),
                held_out_by=next((a for _, a in mine if a.held_out), None),
                declared=(candidate.channel, candidate.delay) if moved else None,
                variants=tuple(sorted(variants)) if len(variants) > 1 else (),
                send_time=send_time,
                send_times=tuple(sorted(send_times)) if len(send_times) > 1 else (),  # type: ignore[arg-type]
            )
        )
    return treated


def _moves(experiment: Experiment) -> bool:
    return any(arm.channel is not None or arm.delay is not None for arm in experiment.arms)


def _variant(arm: Arm, channel: Channel, delay: timedelta) -> tuple[Channel, timedelta]:
    """The channel and delay ``arm`` turns ``channel`` and ``delay`` into (a holdout arm leaves them)."""
    return arm.channel or channel, arm.delay if arm.delay is not None else delay


def _reaches_every_arm(
    experiment: Experiment, candidate: Candidate, catalog: Catalog, state: CustomerState, trigger: str
) -> bool:
    """Whether every channel the experiment's arms send the action on passes its gates for this unit
    (the declared channel already has)."""
    action = candidate.action
    channels = {
        a.channel for a in experiment.arms if a.channel is not None and a.channel is not candidate.channel
    }
    if not channels:
        return True
    entry = trigger in catalog.flows[action.flow].entry_triggers
    return all(
        check_gates(replace(action, channel=ch), catalog.channels[ch], state, candidate.journey, entry)
        is None
        for ch in channels
    )
