"""Multiple-comparison corrections across arms × metrics: adjusted p-values.

Holm's step-down method controls the family-wise error rate (Holm, Scand. J. Statist. 1979);
Benjamini–Hochberg controls the false discovery rate (Benjamini & Hochberg, JRSS B 1995). Both return
adjusted p-values in the input order, as ``statsmodels.stats.multitest.multipletests`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["benjamini_hochberg", "holm"]


def holm(p_values: Sequence[float]) -> list[float]:
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i], reverse=True)
    adjusted = [0.0] * m
    running = 1.0
    for position, i in enumerate(order):
        rank = m - position  # 1-based rank in ascending order
        running = min(running, p_values[i] * m / rank)
        adjusted[i] = min(1.0, running)
    return adjusted
