"""Qini and calibration metrics against their definitions, computed the slow way."""

from __future__ import annotations

import numpy as np
import pytest

from nextbest.training.metrics import binary_metrics, qini_curve


def _qini_by_definition(score: np.ndarray, y: np.ndarray, t: np.ndarray) -> list[float]:
    order = np.argsort(-score, kind="stable")
    gains = [0.0]
    for k in range(1, len(y) + 1):
        top = order[:k]
        yt, yc = y[top][t[top]].sum(), y[top][~t[top]].sum()
        nt, nc = t[top].sum(), (~t[top]).sum()
        gains.append((yt - yc * nt / nc if nc else yt) / len(y))
    return gains


def test_qini_curve_matches_the_definition() -> None:
    rng = np.random.default_rng(3)
    n = 300
    t = rng.random(n) < 0.5
    score = rng.random(n)
    y = (rng.random(n) < 0.1 + 0.2 * t * (score > 0.5)).astype(float)
    curve = qini_curve(score, y, t)
    assert curve.gain == pytest.approx(_qini_by_definition(score, y, t), abs=1e-12)
    random_line = curve.fraction * curve.gain[-1]
    assert curve.coefficient == pytest.approx(float(np.mean(curve.gain - random_line)))


def test_an_oracle_ranking_beats_random_and_an_inverted_one_loses() -> None:
    rng = np.random.default_rng(5)
    n = 20000
    t = rng.random(n) < 0.5
    true_uplift = rng.uniform(-0.1, 0.3, n)
    y = (rng.random(n) < 0.2 + true_uplift * t).astype(float)
    assert qini_curve(true_uplift, y, t).coefficient > 0.01
    assert qini_curve(-true_uplift, y, t).coefficient < -0.01
    assert abs(qini_curve(rng.random(n), y, t).coefficient) < 0.01


def test_calibration_of_a_calibrated_model_is_near_zero_and_of_a_biased_one_is_not() -> None:
    rng = np.random.default_rng(9)
    p = rng.uniform(0.05, 0.6, 50000)
    y = (rng.random(p.size) < p).astype(float)
    good = binary_metrics(y, p)
    bad = binary_metrics(y, np.clip(p + 0.1, 0, 1))
    assert good["ece"] < 0.01
    assert bad["ece"] == pytest.approx(0.1, abs=0.01)
    assert sum(row["rows"] for row in good["reliability"]) == p.size
    assert good["log_loss"] < good["base_log_loss"]
    assert 0.6 < good["auc"] < 0.8
