"""Predicted customer scores over the store: ``nextbest score --all | --stale`` and the scores segments read.

``score_store`` walks every customer (or the stale ones) in pages, scores each page at once with the
promoted churn model (``models.churn.CustomerScorer``) and writes the page's scores in one transaction,
with the model version, the time and the customer version they were computed from
(``store.scores``). ``audience_states`` is the scan a segment or a campaign audience walks: with the
stored scores when its condition reads them, missing or stale ones computed again from the state it has
just read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from nextbest.catalog import Segment
from nextbest.catalog.rules import score_reads
from nextbest.models.churn import CustomerScorer
from nextbest.state import CustomerState
from nextbest.store import Database
from nextbest.store.scan import Rescore, ScoreTally, customer_states, scoring_pages
from nextbest.store.scores import ScoreRow, write_scores

__all__ = ["NoScoresError", "ScoreRun", "audience_states", "rescorer", "score_store"]


class NoScoresError(Exception):
    """A segment reads scores the store does not hold and no model can compute."""


@dataclass
class ScoreRun:
    scanned: int = 0
    written: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def rescorer(scorer: CustomerScorer, now: datetime) -> Rescore:
    """Scores a page of states at ``now`` (what a scan calls for missing or stale scores)."""

    def rescore(states: Sequence[CustomerState]) -> list[Mapping[str, float]]:
        scores = scorer.score(states, now)
        return [{name: float(values[i]) for name, values in scores.items()} for i in range(len(states))]

    return rescore


def score_store(
    db: Database,
    scorer: CustomerScorer,
    now: datetime,
    *,
    stale_only: bool = False,
    page: int = 2000,
    progress: Callable[[ScoreRun], None] | None = None,
) -> ScoreRun:
    """Scores every customer (``stale_only``: those whose stored scores are missing or stale) and writes
    the scores page by page; memory stays flat whatever the number of customers."""
    run = ScoreRun()
    started, cpu = time.perf_counter(), time.process_time()
    for states, versions in scoring_pages(db, page, stale_only=stale_only):
        scores = scorer.score(states, now)
        rows = [
            ScoreRow(
                s.user_id,
                {name: float(values[i]) for name, values in scores.items()},
                scorer.version,
                versions[i],
                now,
            )
            for i, s in enumerate(states)
        ]
        run.scanned += len(states)
        run.written += write_scores(db, rows)
        run.seconds, run.cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        if progress is not None:
            progress(run)
    run.seconds, run.cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return run


def audience_states(
    db: Database,
    segment: Segment,
    scorer: CustomerScorer | None,
    now: datetime,
    tally: ScoreTally | None = None,
) -> Iterator[CustomerState]:
    """Every stored customer for ``segment``: carrying their scores when its condition reads them
    (missing or stale ones computed again with ``scorer`` when given). Raises ``NoScoresError`` at once
    when the condition reads scores, no ``scorer`` is given and the store holds none."""
    if not score_reads(segment.condition.reads):
        return customer_states(db)
    if scorer is None:
        from nextbest.store.scores import score_summary

        if score_summary(db).scored == 0:
            raise NoScoresError(
                f"segment {segment.id} reads {', '.join(sorted(score_reads(segment.condition.reads)))} but "
                "the store holds no customer scores and no churn model is promoted: run `nextbest train "
                "churn --promote` (or use the bundled models/), then `nextbest score --all`"
            )
    rescore = rescorer(scorer, now) if scorer is not None else None
    return customer_states(db, scores=True, rescore=rescore, tally=tally)
