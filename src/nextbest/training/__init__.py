"""Training and evaluation: ``nextbest train`` and ``nextbest evaluate`` (see ``pipeline``)."""

from nextbest.training.pipeline import Source, evaluate, train

__all__ = ["Source", "evaluate", "train"]
