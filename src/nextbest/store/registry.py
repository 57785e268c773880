"""The experiment registry in SQL: which experiment definitions have run, so that a running one cannot
change under the same seed, and how many units each arm has seen."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import case, func, select

from nextbest.experiments import Experiment
from nextbest.store import codec
from nextbest.store.backend import Backend, guard
from nextbest.store.schema import assignments
from nextbest.store.schema import experiments as experiment_registry

__all__ = ["ExperimentRegistry"]


class ExperimentRegistry:
    """The experiments table, and the assignments table counted by arm."""

    def __init__(self, backend: Backend) -> None:
        self.db = backend.db

    def register_experiments(
        self, running: Sequence[Experiment], now: datetime, *, write: bool = True
    ) -> list[str]:
        """Checks that no started experiment changed its arms, weights, coverage or namespace under the
        same seed and hash version, then records the current definitions (unless ``write`` is False).
        Returns the problems; nothing is recorded when there are any."""
        with guard("register experiments"), self.db.begin_write() as conn:
            known = {
                r["experiment_id"]: r
                for r in conn.execute(select(experiment_registry).with_for_update()).mappings()
            }
            problems = []
            for exp in running:
                row = known.get(exp.id)
                same_seed = row is not None and (row["seed"], row["hash_version"]) == (
                    exp.seed,
                    exp.hash_version,
                )
                started = exp.start is None or exp.start <= now
                if same_seed and row is not None and row["fingerprint"] != exp.fingerprint and started:
                    problems.append(
                        f"experiment {exp.id!r} is running (seen since {row['first_seen_at']:%Y-%m-%d}): "
                        "its arms, weights, coverage or namespace changed; a running experiment is "
                        f"immutable. Restore it, or give it a new seed to restart it (e.g. seed: {exp.id}-v2)"
                    )
            if problems or not write:
                return problems
            for exp in running:
                values = codec.experiment_row(exp, now)
                row = known.get(exp.id)
                if row is None:
                    conn.execute(
                        experiment_registry.insert().values(experiment_id=exp.id, first_seen_at=now, **values)
                    )
                elif (row["seed"], row["hash_version"], row["fingerprint"]) != (
                    exp.seed,
                    exp.hash_version,
                    exp.fingerprint,
                ):
                    restarted = (row["seed"], row["hash_version"]) != (exp.seed, exp.hash_version)
                    conn.execute(
                        experiment_registry.update()
                        .where(experiment_registry.c.experiment_id == exp.id)
                        .values(**values, **({"first_seen_at": now} if restarted else {}))
                    )
            return []

    def arm_units(self, experiment_id: str) -> dict[str, int]:
        """Distinct units per arm; a unit seen in more than one arm (which assignment never does on its
        own) is counted once under ``"__multiple__"``, and reports exclude it."""
        first = (
            select(
                assignments.c.user_id,
                func.min(assignments.c.arm_id).label("arm"),
                func.count(func.distinct(assignments.c.arm_id)).label("arms"),
            )
            .where(assignments.c.experiment_id == experiment_id)
            .group_by(assignments.c.user_id)
            .subquery()
        )
        arm = case((first.c.arms > 1, "__multiple__"), else_=first.c.arm)
        query = select(arm.label("arm"), func.count().label("units")).group_by(arm)
        with guard("count experiment units"), self.db.reader.connect() as conn:
            return {row.arm: int(row.units) for row in conn.execute(query)}
