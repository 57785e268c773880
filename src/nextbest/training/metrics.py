"""Evaluation metrics: discrimination and calibration for propensity, Qini / AUUC for uplift.

AUC and log loss come from scikit-learn; the reliability table uses quantile bins of the prediction.
The Qini curve follows Radcliffe (2007):
targeting the ``k`` units an uplift model ranks highest gains ``q(k) = Y_t(k) - Y_c(k) * N_t(k) / N_c(k)``
conversions, where ``Y`` and ``N`` count the conversions and units of each group among the ``k``. Random
targeting gains ``(k / N) * q(N)`` in expectation. The **Qini coefficient** here is the mean gap between
the two over all ``k``, divided by ``N``: positive when the ranking finds the persuadable first, 0 for
random, in conversions per unit. AUUC is the mean of ``q(k) / N`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import log_loss, roc_auc_score

__all__ = ["QiniCurve", "binary_metrics", "qini_curve"]

Array = npt.NDArray[np.float64]


def binary_metrics(y: Array, p: Array, bins: int = 10) -> dict[str, Any]:
    """AUC, log loss (and that of the constant base rate), expected calibration error and the
    reliability table (quantile bins: mean prediction, observed rate, rows)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    rate = float(y.mean()) if y.size else 0.0
    out: dict[str, Any] = {"rows": int(y.size), "positives": int(y.sum()), "base_rate": rate}
    if y.size == 0 or rate in (0.0, 1.0):
        return out
    # Quantile bins of the prediction (ties can merge bins); ECE weighs each bin by its rows.
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(edges.size - 2, 0))
    table = []
    ece = 0.0
    for b in np.unique(which):
        inside = which == b
        predicted, observed, rows = float(p[inside].mean()), float(y[inside].mean()), int(inside.sum())
        ece += rows / y.size * abs(observed - predicted)
        table.append({"predicted": predicted, "observed": observed, "rows": rows})
    out.update(
        auc=float(roc_auc_score(y, p)),
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        base_log_loss=float(log_loss(y, np.full_like(p, rate), labels=[0, 1])),
        ece=ece,
        reliability=table,
    )
    return out


@dataclass(frozen=True)
class QiniCurve:
    fraction: Array  # share of units targeted, 0..1
    gain: Array  # incremental conversions per unit of the population, q(k) / N

    @property
    def coefficient(self) -> float:
        """Mean gap between the curve and random targeting (per unit)."""
        return float(np.mean(self.gain - self.fraction * self.gain[-1]))

    @property
    def auuc(self) -> float:
        return float(np.mean(self.gain))

    def at(self, fractions: Sequence[float]) -> Array:
        return np.asarray(np.interp(fractions, self.fraction, self.gain), dtype=np.float64)


def qini_curve(score: Array, y: Array, treated: npt.NDArray[np.bool_]) -> QiniCurve:
    """The Qini curve of ranking units by ``score`` (highest first); ties are broken by position, so
    shuffle first if the order of ``score`` carries information."""
    order = np.argsort(-np.asarray(score), kind="stable")
    y = np.asarray(y, dtype=np.float64)[order]
    t = np.asarray(treated, dtype=bool)[order]
    n_t = np.cumsum(t)
    n_c = np.cumsum(~t)
    y_t = np.cumsum(y * t)
    y_c = np.cumsum(y * ~t)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(n_c > 0, y_t - y_c * n_t / np.maximum(n_c, 1), y_t)
    n = y.size
    return QiniCurve(np.concatenate([[0.0], np.arange(1, n + 1) / n]), np.concatenate([[0.0], gain / n]))
