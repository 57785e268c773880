"""Training sets: a query over the exposure log (features as production logged them), or a CSV with a
declared schema.

From the store, a **propensity** row is an exposure that was not cancelled and whose attribution window
has closed; its label is an order by the same customer within the window after the send. An **uplift**
row is a unit's first experiment exposure (treated, or held out with the action it would have received);
its label is an order within the window after the decision. Both carry the logged features, so training
sees exactly what serving saw.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import case, func, select

from nextbest.models import features as feats
from nextbest.store import Database
from nextbest.store.schema import assignments, events, exposures

__all__ = ["CsvSchema", "TrainingSet", "from_csv", "load_schema", "propensity_set", "uplift_set"]

Array = npt.NDArray[np.float64]


@dataclass
class TrainingSet:
    """Rows in ``features`` order; ``times`` orders them for the time-based split (None: no time)."""

    x: Array
    y: Array
    features: list[str]
    feature_set: str
    categorical: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    treated: npt.NDArray[np.bool_] | None = None
    times: npt.NDArray[np.float64] | None = None  # POSIX seconds
    flows: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.size)

    def subset(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> TrainingSet:
        return TrainingSet(
            self.x[index],
            self.y[index],
            self.features,
            self.feature_set,
            self.categorical,
            self.categories,
            None if self.treated is None else self.treated[index],
            None if self.times is None else self.times[index],
            self.flows,
            self.source,
        )


# -- from the store --------------------------------------------------------------------------------------


def _rows_to_set(
    rows: Sequence[Any], window: timedelta, orders: dict[str, list[datetime]], *, uplift: bool
) -> TrainingSet:
    actions = sorted({r.action_id for r in rows})
    codes = feats.action_codes(actions)
    logged, ids, y, t, times, flows = [], [], [], [], [], set()
    for r in rows:
        values = feats.decode(r.features)
        if values is None:
            continue
        start = r.start
        y.append(float(any(start < at <= start + window for at in orders.get(r.user_id, ()))))
        logged.append(values)
        ids.append(r.action_id)
        times.append(start.timestamp())
        flows.add(r.flow)
        if uplift:
            t.append(not r.held_out)
    x = feats.matrix(np.array(logged).reshape(len(logged), len(feats.LOGGED)), ids, codes)
    return TrainingSet(
        x=x,
        y=np.array(y, dtype=np.float64),
        features=list(feats.FEATURES),
        feature_set=feats.FEATURE_SET,
        categorical=list(feats.CATEGORICAL),
        categories={feats.ACTION: actions},
        treated=np.array(t, dtype=bool) if uplift else None,
        times=np.array(times, dtype=np.float64),
        flows=sorted(flows),
    )


def _orders(db: Database, users_since: datetime) -> dict[str, list[datetime]]:
    query = select(events.c.user_id, events.c.occurred_at).where(
        events.c.type == "order_placed", events.c.occurred_at > users_since
    )
    out: dict[str, list[datetime]] = {}
    with db.reader.connect() as conn:
        for user, at in conn.execute(query):
            out.setdefault(user, []).append(at)
    return out


def propensity_set(db: Database, window: timedelta, as_of: datetime) -> TrainingSet:
    """Exposures sent no later than ``as_of - window`` (so every label is final)."""
    query = (
        select(
            exposures.c.user_id,
            exposures.c.action_id,
            exposures.c.flow,
            exposures.c.send_at.label("start"),
            exposures.c.features,
        )
        .where(
            exposures.c.cancelled_at.is_(None),
            exposures.c.features.is_not(None),
            exposures.c.send_at <= as_of - window,
        )
        # By what the rows are (ties in time by customer and action), not by when they were written,
        # so that the same store trains the same model; the exposure id settles what is left.
        .order_by(exposures.c.send_at, exposures.c.user_id, exposures.c.action_id, exposures.c.exposure_id)
    )
    with db.reader.connect() as conn:
        rows = conn.execute(query).all()
    since = min((r.start for r in rows), default=as_of)
    data = _rows_to_set(rows, window, _orders(db, since), uplift=False)
    data.source = {"store": _redacted(db.url), "table": "exposures", "as_of": as_of.isoformat()}
    return data


def _holdout_arms(db: Database, as_of: datetime) -> dict[tuple[str, str], int]:
    """The holdout arms, as (experiment, arm), with their units: arms every one of whose exposures was
    held out (a treated arm's units can be held out by another experiment, and are not this experiment's
    control)."""
    units = func.count(func.distinct(assignments.c.user_id))
    with db.reader.connect() as conn:
        return {
            (str(r.experiment_id), str(r.arm_id)): int(r.units)
            for r in conn.execute(
                select(assignments.c.experiment_id, assignments.c.arm_id, units.label("units"))
                .where(assignments.c.occurred_at <= as_of)
                .group_by(assignments.c.experiment_id, assignments.c.arm_id)
                .having(func.sum(case((assignments.c.held_out.is_(True), 0), else_=1)) == 0)
            )
        }


def _holdout_experiment(holdouts: dict[tuple[str, str], int]) -> str | None:
    """The experiment with the most held-out units: treated and untreated units are only comparable
    within one experiment (pooling experiments with different holdout shares confounds the treatment
    with whatever distinguishes the experiments' units)."""
    if not holdouts:
        return None
    counts: dict[str, int] = {}
    for (experiment, _arm), units in holdouts.items():
        counts[experiment] = max(counts.get(experiment, 0), units)
    return min(counts, key=lambda e: (-counts[e], e))


def uplift_set(
    db: Database, window: timedelta, as_of: datetime, experiments: Sequence[str] = ()
) -> TrainingSet:
    """Each unit's first exposure to each of ``experiments`` (by default the holdout experiment with the
    most held-out units), decided no later than ``as_of - window``. Only the first: a unit's later
    decisions are selected by what the earlier ones did (a treated customer the reminder persuaded has
    bought and gets no later step), so their treated and untreated rows are no longer comparable.

    Several experiments pool their rows (the action is a feature, so each action's effect is learned
    from the experiment that randomized it): a flow's holdout for the first message, and a holdout per
    later step (``cart_nudge_sms`` withheld from half of the carts that reach it) for the steps a flow's
    holdout never randomizes on their own. Only randomized rows are kept:

    - a row whose action another experiment's holdout arm withheld is left out: whether it was sent was
      not this experiment's to decide (a later step's holdout only sees the units its flow treated);
    - a decision's action is analysed within the first experiment listed with a unit's first exposure
      there; the others' rows for it are left out (two experiments would count one message twice, and
      the pair's arms would be compared as if one experiment had set them);
    - the experiments whose rows are kept must hold out the same share of their units (else a
      ``ValueError``): the learners take one treated share for every row."""
    holdouts = _holdout_arms(db, as_of)
    chosen = list(dict.fromkeys(experiments))
    if not chosen:
        default = _holdout_experiment(holdouts)
        chosen = [default] if default is not None else []
    with_holdout = {e for e, _ in holdouts}
    missing = [e for e in chosen if e not in with_holdout]
    if missing:
        raise ValueError(
            f"experiment {', '.join(repr(e) for e in missing)} has no holdout arm (no_action) exposed by "
            f"{as_of.isoformat()}: uplift needs units it held out"
        )
    a = assignments.alias("a")
    first = (
        select(a.c.experiment_id, a.c.user_id, func.min(a.c.assignment_id).label("first_id"))
        .where(a.c.features.is_not(None), a.c.experiment_id.in_(chosen))
        .group_by(a.c.experiment_id, a.c.user_id)
        .subquery()
    )
    other = assignments.alias("other")
    query = (
        select(
            a.c.assignment_id,
            a.c.decision_id,
            a.c.experiment_id,
            a.c.user_id,
            a.c.action_id,
            a.c.flow,
            a.c.held_out,
            a.c.probability,
            a.c.occurred_at.label("start"),
            a.c.features,
            other.c.experiment_id.label("other_experiment"),
            other.c.arm_id.label("other_arm"),
        )
        .join(first, a.c.assignment_id == first.c.first_id)
        .outerjoin(
            other,
            (other.c.decision_id == a.c.decision_id)
            & (other.c.action_id == a.c.action_id)
            & (other.c.experiment_id != a.c.experiment_id),
        )
        .where(a.c.occurred_at <= as_of - window)
        # A total order on what the rows are, not on when they were written: the same store trains the
        # same model whatever order concurrent callers committed its decisions in (the split by time
        # keeps ties in this order). A unit has one first exposure per experiment.
        .order_by(a.c.occurred_at, a.c.user_id, a.c.experiment_id)
    )
    with db.reader.connect() as conn:
        joined = conn.execute(query).all()
    rows = _randomized(joined, chosen, holdouts)
    _same_holdout_share(rows)
    since = min((r.start for r in rows), default=as_of)
    data = _rows_to_set(rows, window, _orders(db, since), uplift=True)
    data.source = {
        "store": _redacted(db.url),
        "table": "assignments",
        "experiment": ",".join(chosen),
        "as_of": as_of.isoformat(),
    }
    return data


def _randomized(joined: Sequence[Any], chosen: list[str], holdouts: dict[tuple[str, str], int]) -> list[Any]:
    """The rows of ``joined`` (one per first exposure and other experiment at the same decision and
    action) that ``uplift_set`` keeps, in their order: see its rules."""
    rows: dict[int, Any] = {}
    withheld: set[int] = set()
    covered: dict[tuple[str, str], set[str]] = {}  # (decision, action): the chosen experiments with a row
    for r in joined:
        rows.setdefault(r.assignment_id, r)
        if r.other_experiment is not None and (r.other_experiment, r.other_arm) in holdouts:
            withheld.add(r.assignment_id)
        covered.setdefault((r.decision_id, r.action_id), set()).add(r.experiment_id)
    rank = {e: i for i, e in enumerate(chosen)}
    kept = []
    for assignment_id, r in rows.items():
        owner = min(covered[(r.decision_id, r.action_id)], key=rank.__getitem__)
        if r.experiment_id == owner and assignment_id not in withheld:
            kept.append(r)
    return kept


def _same_holdout_share(rows: Sequence[Any]) -> None:
    """Refuses rows pooled from experiments that hold out different shares of their units: the chance of
    being treated would then depend on which experiment a row came from, and so on whatever tells the
    experiments' rows apart (the learners take one treated share for all rows). A held-out row kept by
    ``uplift_set`` is in its experiment's holdout arm, whose assignment probability it carries."""
    shares: dict[str, float] = {}
    for r in rows:
        if r.held_out:
            shares.setdefault(r.experiment_id, float(r.probability))
    if len({round(p, 9) for p in shares.values()}) > 1:
        listed = ", ".join(f"{e} {100 * p:g} %" for e, p in sorted(shares.items()))
        raise ValueError(
            f"the experiments pooled hold out different shares of their units ({listed}): a row's chance "
            "of being treated would depend on its experiment; pool experiments with the same holdout "
            "share, or train on one"
        )


# -- from a CSV ------------------------------------------------------------------------------------------


class TreatmentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: str
    control: list[str] = Field(min_length=1)
    # Values that count as treated; empty: every value that is not control.
    treated: list[str] = Field(default_factory=list)


class CsvSchema(BaseModel):
    """Declares how a CSV becomes a training set."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    features: dict[str, Literal["numeric", "categorical"]] = Field(min_length=1)
    label: str
    treatment: TreatmentSpec | None = None
    # A column of ISO times or POSIX seconds for the time-based split; none: a seeded random split.
    time: str | None = None


def load_schema(path: Path) -> CsvSchema:
    try:
        return CsvSchema.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the schema: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: {problems}") from exc


def from_csv(path: Path, schema: CsvSchema, label: str | None = None) -> TrainingSet:
    """Reads ``path`` as ``schema`` says; ``label`` overrides the schema's label column."""
    target = label or schema.label
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        needed = [*schema.features, target]
        if schema.treatment is not None:
            needed.append(schema.treatment.column)
        if schema.time is not None:
            needed.append(schema.time)
        missing = [c for c in needed if c not in header]
        if missing:
            raise ValueError(f"{path}: columns {missing} are not in the file (it has {header})")
        rows = list(reader)
    treatment = schema.treatment
    if treatment is not None and treatment.treated:
        keep = set(treatment.control) | set(treatment.treated)
        rows = [r for r in rows if r[treatment.column] in keep]
    categories = {
        name: sorted({r[name] for r in rows})
        for name, kind in schema.features.items()
        if kind == "categorical"
    }
    codes = {name: {v: float(i) for i, v in enumerate(values)} for name, values in categories.items()}
    x = np.empty((len(rows), len(schema.features)), dtype=np.float64)
    for j, (name, kind) in enumerate(schema.features.items()):
        column = [r[name] for r in rows]
        try:
            x[:, j] = [codes[name][v] for v in column] if kind == "categorical" else _numbers(column)
        except ValueError as exc:
            raise ValueError(f"{path}: column {name!r} is declared numeric but holds {exc}") from exc
    y = np.array(_numbers([r[target] for r in rows]))
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise ValueError(f"{path}: the label column {target!r} must hold 0 or 1")
    times = None
    if schema.time is not None:
        times = np.array([_posix(r[schema.time]) for r in rows])
    treated = None
    if treatment is not None:
        treated = np.array([r[treatment.column] not in treatment.control for r in rows], dtype=bool)
    return TrainingSet(
        x=x,
        y=y,
        features=list(schema.features),
        feature_set=f"csv:{schema.name}",
        categorical=list(categories),
        categories=categories,
        treated=treated,
        times=times,
        flows=[],
        source={"csv": str(path), "schema": schema.name, "label": target},
    )


def _numbers(column: Sequence[str]) -> list[float]:
    out = []
    for value in column:
        try:
            out.append(float(value) if value != "" else np.nan)
        except ValueError:
            raise ValueError(repr(value)) from None
    return out


def _posix(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value).timestamp()


def _redacted(url: str) -> str:
    """The URL without its password, for the model card."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
