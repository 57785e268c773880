"""Fitting and evaluating LightGBM models: deterministic for a seed, early-stopped on a validation slice,
evaluated on a held-out period the model never saw."""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from nextbest.models import features as feats
from nextbest.models.artifacts import ModelCard, ModelKind
from nextbest.models.registry import effect_rows
from nextbest.training.datasets import TrainingSet
from nextbest.training.metrics import binary_metrics, qini_curve

__all__ = [
    "DEFAULT_CHOICE",
    "LEARNERS",
    "Split",
    "TrainedModel",
    "fit_binary",
    "libraries",
    "recode",
    "split",
    "train_propensity",
    "train_uplift",
]

Index = npt.NDArray[np.intp]

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
    "lambda_l2": 1.0,
    "feature_fraction": 1.0,
    "max_bin": 63,
    "verbose": -1,
    # Deterministic for a seed: one thread, row-wise histograms, no bagging.
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
}
MAX_ROUNDS = 1000
EARLY_STOPPING = 50
QINI_POINTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class Split:
    train: Index
    valid: Index
    test: Index
    how: str

    def describe(self, data: TrainingSet) -> dict[str, Any]:
        out: dict[str, Any] = {
            "split": self.how,
            "rows": {
                "train": int(self.train.size),
                "valid": int(self.valid.size),
                "test": int(self.test.size),
            },
        }
        if data.times is not None and len(data):
            times = data.times

            def stamp(i: Index, f: Any) -> str | None:
                return datetime.fromtimestamp(float(f(times[i])), UTC).isoformat() if i.size else None

            fit = np.concatenate([self.train, self.valid])
            out["window"] = {
                "train_start": stamp(fit, np.min),
                "train_end": stamp(fit, np.max),
                "test_start": stamp(self.test, np.min),
                "test_end": stamp(self.test, np.max),
            }
        return out


def split(data: TrainingSet, seed: int, test_fraction: float = 0.25, valid_fraction: float = 0.2) -> Split:
    """Time-based when the rows have times (the test set is the latest period, validation the latest
    slice before it); a seeded random split otherwise."""
    n = len(data)
    if data.times is not None:
        order = np.argsort(data.times, kind="stable")
        how = "time"
    else:
        order = np.random.default_rng(seed).permutation(n)
        how = f"random(seed={seed})"
    n_test = round(n * test_fraction)
    rest, test = order[: n - n_test], order[n - n_test :]
    n_valid = round(rest.size * valid_fraction)
    return Split(rest[: rest.size - n_valid], rest[rest.size - n_valid :], test, how)


@dataclass(frozen=True)
class TrainedModel:
    card: ModelCard
    files: Mapping[str, bytes]
    predictions: Mapping[str, npt.NDArray[np.float64]]  # on the test rows


def libraries() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        **{name: version(name) for name in ("lightgbm", "numpy", "scikit-learn", "nextbest")},
    }


# Each arm's model sees a few thousand noisy rows, and their difference is what matters: small trees
# and large leaves keep the noise of one arm from passing for an effect. Measured on the bundled
# simulated store (benchmarks/bench_decision_quality.py): Qini 0.0046 vs 0.0007 with DEFAULT_PARAMS,
# and more net incremental revenue when targeting with it.
UPLIFT_PARAMS: dict[str, Any] = {"num_leaves": 4, "min_data_in_leaf": 100, "learning_rate": 0.03}


def fit_binary(
    data: TrainingSet,
    train: Index,
    valid: Index,
    seed: int,
    params: Mapping[str, Any] | None = None,
    *,
    init_model: lgb.Booster | None = None,
) -> lgb.Booster:
    """A binary LightGBM classifier, early-stopped on ``valid``. With ``init_model`` it continues from
    that model's trees (its predictions are the starting scores) and the result holds both."""
    settings = {**DEFAULT_PARAMS, "seed": seed, **(params or {})}
    settings["min_data_in_leaf"] = min(settings["min_data_in_leaf"], max(5, train.size // 20))
    common: dict[str, Any] = {
        "feature_name": data.features,
        "categorical_feature": data.categorical,
        "free_raw_data": False,
    }
    fit = lgb.Dataset(data.x[train], data.y[train], params={"max_bin": settings["max_bin"]}, **common)
    callbacks: list[Any] = [lgb.early_stopping(EARLY_STOPPING, verbose=False)] if valid.size else []
    booster = lgb.train(
        settings,
        fit,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[lgb.Dataset(data.x[valid], data.y[valid], reference=fit, **common)] if valid.size else [],
        callbacks=callbacks,
        init_model=init_model,
    )
    if valid.size and booster.best_iteration > 0:
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
    return booster


def _card(kind: ModelKind, data: TrainingSet, parts: Split, seed: int, **extra: Any) -> ModelCard:
    return ModelCard(
        kind=kind,
        version="pending",
        feature_set=data.feature_set,
        features=data.features,
        categorical=data.categorical,
        categories=data.categories,
        files=extra.pop("files"),
        sha256={},
        data={**data.source, **parts.describe(data)},
        params={
            **{k: v for k, v in DEFAULT_PARAMS.items() if k != "verbose"},
            "seed": seed,
            **extra.pop("params", {}),
        },
        libraries=libraries(),
        **extra,
    )


def train_propensity(data: TrainingSet, seed: int, outcome: str = "order", command: str = "") -> TrainedModel:
    _require(data, "propensity")
    parts = split(data, seed)
    booster = fit_binary(data, parts.train, parts.valid, seed)
    p = _predict(booster, data.x[parts.test])
    metrics = binary_metrics(data.y[parts.test], p)
    metrics["trees"] = booster.num_trees()
    card = _card(
        ModelKind.PROPENSITY,
        data,
        parts,
        seed,
        files={"model": "model.txt"},
        outcome=outcome,
        metrics={"test": metrics},
        command=command,
    )
    return TrainedModel(card, {"model.txt": booster.model_to_string().encode()}, {"propensity": p})


# An action the uplift model scores needs this many training rows in each arm; the others (a journey's
# later steps, rarely a unit's first exposure) keep their propensity score.
MIN_ARM_ROWS = 50


def _randomized_actions(data: TrainingSet) -> list[str]:
    vocabulary = data.categories.get(feats.ACTION, [])
    if data.treated is None or not vocabulary:
        return []
    codes = data.x[:, data.features.index(feats.ACTION)]
    out = []
    for i, action in enumerate(vocabulary):
        rows = codes == i
        if min(int((rows & data.treated).sum()), int((rows & ~data.treated).sum())) >= MIN_ARM_ROWS:
            out.append(action)
    return out


# The uplift learners. Each gives serving P(convert | untreated) (the control model) and P(convert |
# treated), and the uplift is their difference:
# - "two-model": the T-learner, one classifier per arm fitted independently;
# - "shared-base": one classifier on both arms' rows first, then each arm's classifier continues from it
#   with trees of its own (early-stopped on that arm). What both arms share (who buys anyway) is learned
#   once from all rows, so the two arms' noise is not differenced into the uplift; the arm-specific trees
#   carry the difference, as log-odds shifts;
# - "x-learner" (Kunzel et al. 2019): the two-model classifiers, then each arm's imputed effects (a
#   treated row's outcome less the control model's prediction, the treated model's prediction less an
#   untreated row's outcome) regressed on the features, one regression per arm, combined with the
#   treated share e as e x tau_untreated + (1 - e) x tau_treated. Served as the control model plus that
#   effect: the effect is learned where it is, not as the difference of two noisy levels;
# - "x-learner-by-action": the X-learner's pooled effect regressions, then, for each action with
#   MIN_ACTION_EFFECT_ROWS rows in each arm of the training slice, a pair continuing from them on that
#   action's rows alone (trees of its own, early-stopped on its validation rows; the others keep the
#   pooled pair). Pooled, an action with no effect borrows part of its neighbours' (a regression of a
#   few large leaves rarely spends one on the action: a test shows it); a pair fitted on an action's rows
#   alone, from scratch, is noisier. On the simulated store the pooled X-learner was already right about
#   the cart actions, whose effects share one shape: this one tied it (+0.3 points at 320,000
#   customers, +0.5 at 40,000), and from scratch it lost 1.1 points at 320,000 (benchmarks/RESULTS.md);
# - "transformed-outcome": one regression of Y x (T - e) / (e (1 - e)), whose expectation given the
#   features is the uplift under randomization (Athey and Imbens 2015), on the control model.
# - "ensemble": the mean of the uplifts of the two-model, shared-base and X-learners (their errors are
#   partly independent), served as the two-model control plus every member's arms and effects as
#   weighted effects.
LEARNERS = ("two-model", "shared-base", "x-learner", "x-learner-by-action", "transformed-outcome", "ensemble")
_ENSEMBLE = ("two-model", "shared-base", "x-learner")
# The learners chosen among by default (the best validation Qini). The transformed outcome is fitted and
# reported in the card, and kept only when asked for: served, it lost to the two-model learner on every
# population of the simulated lifecycle store and the simulated campaigns (benchmarks/RESULTS.md), its
# target's variance making a validation Qini that flatters it a poor guide.
DEFAULT_CHOICE = ("two-model", "shared-base", "x-learner")

# The effect regressions: a few large leaves, as the arms' classifiers, on a noisier target.
EFFECT_PARAMS: dict[str, Any] = {**UPLIFT_PARAMS, "objective": "regression", "metric": "l2"}

# "x-learner-by-action": an action gets effect regressions of its own with this many training rows in
# each arm; the actions with fewer keep the pooled pair.
MIN_ACTION_EFFECT_ROWS = 2000

# An effect regression: its file role, the fitted booster, its weight in the uplift, and the actions it
# prices (empty: every action no other effect names).
Effect = tuple[str, lgb.Booster, float, tuple[str, ...]]


@dataclass(frozen=True)
class _Learned:
    """A learner's fitted models: the arms' classifiers and, for the effect learners, the effect
    regressions with their weights and scopes (the uplift is their weighted sum, P(treated) the control
    model's prediction plus it, clipped to [0, 1])."""

    treated: lgb.Booster
    control: lgb.Booster
    effects: tuple[Effect, ...] = ()

    def predict(
        self, x: npt.NDArray[np.float64], actions: list[str] | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """P(convert | treated), P(convert | untreated) for rows of ``x``, as serving computes them
        (``actions``: each row's action id, needed when an effect is scoped to actions)."""
        p_c = _predict(self.control, x)
        if not self.effects:
            return _predict(self.treated, x), p_c
        p_t = p_c.copy()
        scopes = [frozenset(scope) for *_, scope in self.effects]
        if any(scopes) and actions is None:
            raise ValueError("an uplift model with effects per action needs each row's action")
        for (_, booster, weight, _), rows in zip(
            self.effects, effect_rows(scopes, actions or []), strict=True
        ):
            if rows is None:
                p_t += weight * _predict(booster, x)
            elif rows.size:
                p_t[rows] += weight * _predict(booster, x[rows])
        return np.clip(p_t, 0.0, 1.0), p_c


def _row_actions(data: TrainingSet, rows: Index | None = None) -> list[str]:
    """Each row's action id (rows of ``rows``, default all); "" for a code outside the vocabulary."""
    vocabulary = data.categories.get(feats.ACTION, [])
    if feats.ACTION not in data.features:
        return [""] * (data.x.shape[0] if rows is None else rows.size)
    column = data.x[:, data.features.index(feats.ACTION)]
    return feats.action_ids(column if rows is None else column[rows], vocabulary)


def _with_target(data: TrainingSet, rows: Index, target: npt.NDArray[np.float64]) -> TrainingSet:
    """``rows`` of ``data`` with ``target`` (one value per row of ``rows``) as the label."""
    out = data.subset(rows)
    out.y = np.asarray(target, dtype=np.float64)
    return out


def _fit_effect(
    data: TrainingSet,
    train: Index,
    valid: Index,
    target: npt.NDArray[np.float64],
    seed: int,
    *,
    init: lgb.Booster | None = None,
) -> lgb.Booster:
    """A regression of ``target`` (a value for every row of ``data``) on the features, early-stopped
    on ``valid``; with ``init``, continuing from that regression's trees."""
    rows = np.concatenate([train, valid])
    sub = _with_target(data, rows, target[rows])
    n = train.size
    return fit_binary(sub, np.arange(n), np.arange(n, rows.size), seed, EFFECT_PARAMS, init_model=init)


def _fit_arms(data: TrainingSet, parts: Split, seed: int, learner: str) -> _Learned:
    t = data.treated
    assert t is not None
    base = (
        fit_binary(data, parts.train, parts.valid, seed, UPLIFT_PARAMS) if learner == "shared-base" else None
    )
    treated = fit_binary(
        data, parts.train[t[parts.train]], parts.valid[t[parts.valid]], seed, UPLIFT_PARAMS, init_model=base
    )
    control = fit_binary(
        data, parts.train[~t[parts.train]], parts.valid[~t[parts.valid]], seed, UPLIFT_PARAMS, init_model=base
    )
    if learner in ("two-model", "shared-base"):
        return _Learned(treated, control)
    e = float(t[parts.train].mean())
    if learner in ("x-learner", "x-learner-by-action"):
        mu_t, mu_c = _predict(treated, data.x), _predict(control, data.x)
        imputed = np.where(t, data.y - mu_c, mu_t - data.y)
        if learner == "x-learner":
            return _Learned(treated, control, _x_effects(data, parts, imputed, seed))
        return _Learned(treated, control, _x_effects_by_action(data, parts, imputed, seed))
    transformed = data.y * (t.astype(np.float64) - e) / (e * (1.0 - e))
    return _Learned(
        treated,
        control,
        (("effect", _fit_effect(data, parts.train, parts.valid, transformed, seed), 1.0, ()),),
    )


def _x_effects(
    data: TrainingSet,
    parts: Split,
    imputed: npt.NDArray[np.float64],
    seed: int,
    *,
    tag: str = "",
    scope: tuple[str, ...] = (),
    init: tuple[Effect, ...] = (),
) -> tuple[Effect, ...]:
    """The X-learner's two effect regressions on ``parts``' rows (each arm's imputed effects), combined
    with the treated share e of the training rows as e x tau_untreated + (1 - e) x tau_treated."""
    t = data.treated
    assert t is not None
    e = float(t[parts.train].mean())
    arm: dict[bool, lgb.Booster] = {}
    start = {True: init[0][1], False: init[1][1]} if init else {}
    for side in (True, False):
        arm[side] = _fit_effect(
            data,
            parts.train[t[parts.train] == side],
            parts.valid[t[parts.valid] == side],
            imputed,
            seed,
            init=start.get(side),
        )
    return (
        (f"effect_treated{tag}", arm[True], 1.0 - e, scope),
        (f"effect_control{tag}", arm[False], e, scope),
    )


def _x_effects_by_action(
    data: TrainingSet, parts: Split, imputed: npt.NDArray[np.float64], seed: int
) -> tuple[Effect, ...]:
    """The X-learner's pooled effect regressions (every action's rows) and, for each action with
    ``MIN_ACTION_EFFECT_ROWS`` training rows in each arm, a pair continuing from them on that action's
    rows alone: the pooled shape, corrected where the action's own rows say so. The other actions keep
    the pooled pair."""
    t = data.treated
    assert t is not None
    actions = np.asarray(_row_actions(data), dtype=object)
    own = [
        a
        for a in sorted(set(actions[parts.train]) - {""})
        if min(
            int((t[parts.train] & (actions[parts.train] == a)).sum()),
            int((~t[parts.train] & (actions[parts.train] == a)).sum()),
        )
        >= MIN_ACTION_EFFECT_ROWS
    ]
    pooled = _x_effects(data, parts, imputed, seed)
    effects: list[Effect] = []
    for i, action in enumerate(own):
        mine = Split(
            parts.train[actions[parts.train] == action],
            parts.valid[actions[parts.valid] == action],
            parts.test[actions[parts.test] == action],
            parts.how,
        )
        effects += _x_effects(data, mine, imputed, seed, tag=f"_{i}", scope=(action,), init=pooled)
    # The other actions (too few rows of their own) keep the pooled pair, fitted on every action's rows.
    effects += pooled
    return tuple(effects)


def _ensemble(fitted: Mapping[str, _Learned]) -> _Learned:
    """The mean uplift of the ``_ENSEMBLE`` learners, as one served model: the first member's control
    model, plus, for each member, its arms (treated +w, control -w) or its effects, each at 1/k of its
    weight."""
    share = 1.0 / len(_ENSEMBLE)
    first = fitted[_ENSEMBLE[0]]
    effects: list[Effect] = []
    for name in _ENSEMBLE:
        member, tag = fitted[name], name.replace("-", "_")
        if member.effects:
            effects += [(f"{tag}_{role}", b, w * share, scope) for role, b, w, scope in member.effects]
        else:
            effects += [
                (f"{tag}_treated", member.treated, share, ()),
                (f"{tag}_control", member.control, -share, ()),
            ]
    return _Learned(first.treated, first.control, tuple(effects))


def train_uplift(
    data: TrainingSet, seed: int, outcome: str = "order", command: str = "", learner: str | None = None
) -> TrainedModel:
    """An uplift model (``LEARNERS``); uplift is the difference of its P(convert | treated) and
    P(convert | untreated). Every learner is fitted and scored by its Qini coefficient on the validation
    slice (the latest rows before the test period, randomized exposures only) and on the test period; the
    card lists them all. Without ``learner`` the best of ``DEFAULT_CHOICE`` on the validation slice is
    kept, with it that one (the card says which rule chose). The kept one
    is evaluated on the test period by Qini against random targeting and against ranking by the treated
    model's P(convert) (what a propensity model would target)."""
    _require(data, "uplift")
    if data.treated is None or data.treated.all() or not data.treated.any():
        raise ValueError("uplift needs both treated and untreated (held-out or control) rows")
    if learner is not None and learner not in LEARNERS:
        raise ValueError(f"unknown uplift learner {learner!r}; choose from {', '.join(LEARNERS)}")
    parts = split(data, seed)
    t = data.treated
    x_valid, y_valid, t_valid = data.x[parts.valid], data.y[parts.valid], t[parts.valid]
    fitted: dict[str, _Learned] = {}
    a_valid, a_test = _row_actions(data, parts.valid), _row_actions(data, parts.test)
    selection: dict[str, float] = {}
    auuc: dict[str, float] = {}
    for name in LEARNERS:
        fitted[name] = _ensemble(fitted) if name == "ensemble" else _fit_arms(data, parts, seed, name)
        v_t, v_c = fitted[name].predict(x_valid, a_valid)
        on_valid = uplift_metrics(v_t - v_c, v_t, y_valid, t_valid, seed)
        selection[name] = on_valid["qini"]["uplift_model"]
        auuc[name] = on_valid["auuc"]["uplift_model"]
    chosen = learner or max(DEFAULT_CHOICE, key=lambda name: selection[name])
    learned = fitted[chosen]
    treated, control = learned.treated, learned.control
    x_test, y_test, t_test = data.x[parts.test], data.y[parts.test], t[parts.test]
    p_t, p_c = learned.predict(x_test, a_test)
    metrics = uplift_metrics(p_t - p_c, p_t, y_test, t_test, seed)
    # Every learner on the test period too (the kept one was chosen before it was looked at).
    metrics["learners"] = {}
    for name, other in fitted.items():
        o_t, o_c = other.predict(x_test, a_test)
        on_test = uplift_metrics(o_t - o_c, o_t, y_test, t_test, seed)
        metrics["learners"][name] = {
            "qini": on_test["qini"]["uplift_model"],
            "auuc": on_test["auuc"]["uplift_model"],
        }
    metrics["by_action"] = uplift_by_action(data, parts.test, p_t - p_c)
    metrics["treated_model"] = binary_metrics(y_test[t_test], p_t[t_test])
    metrics["control_model"] = binary_metrics(y_test[~t_test], p_c[~t_test])
    metrics["trees"] = {
        "treated": treated.num_trees(),
        "control": control.num_trees(),
        **{role: b.num_trees() for role, b, _, _ in learned.effects},
    }
    card = _card(
        ModelKind.UPLIFT,
        data,
        parts,
        seed,
        files={
            "treated": "treated.txt",
            "control": "control.txt",
            **{role: f"{role}.txt" for role, *_ in learned.effects},
        },
        flows=data.flows,
        actions=_randomized_actions(data),
        outcome=outcome,
        metrics={
            "test": metrics,
            "selection": {
                "by": "given" if learner else "qini on the validation slice",
                **({} if learner else {"among": list(DEFAULT_CHOICE)}),
                "qini_on_validation": selection,
                "auuc_on_validation": auuc,
                "chosen": chosen,
            },
        },
        params={
            "learner": chosen,
            **UPLIFT_PARAMS,
            # served: P(treated) = the control model's prediction + the sum of weight x effect
            **({"effects": {role: w for role, _, w, _ in learned.effects}} if learned.effects else {}),
            **(
                {"effect_actions": {role: list(scope) for role, _, _, scope in learned.effects if scope}}
                if any(scope for *_, scope in learned.effects)
                else {}
            ),
        },
        command=command,
    )
    files = {
        "treated.txt": treated.model_to_string().encode(),
        "control.txt": control.model_to_string().encode(),
        **{f"{role}.txt": b.model_to_string().encode() for role, b, _, _ in learned.effects},
    }
    return TrainedModel(card, files, {"treated": p_t, "control": p_c, "uplift": p_t - p_c})


def uplift_by_action(
    data: TrainingSet, rows: Index, uplift: npt.NDArray[np.float64]
) -> dict[str, dict[str, float | int]]:
    """Per action of ``rows``, the observed uplift (treated less untreated conversion, with its standard
    error) against the model's mean predicted uplift. A set pooling several actions' holdouts is ranked
    across actions by the pooled Qini; this shows whether the model prices each action's effect right
    (each action's holdout is randomized on its own, so its difference of means is unbiased)."""
    vocabulary = data.categories.get(feats.ACTION, [])
    if data.treated is None or not vocabulary or feats.ACTION not in data.features:
        return {}
    codes = data.x[rows, data.features.index(feats.ACTION)]
    y, treated = data.y[rows], data.treated[rows]
    out: dict[str, dict[str, float | int]] = {}
    for i, action in enumerate(vocabulary):
        mine = codes == i
        on, off = y[mine & treated], y[mine & ~treated]
        if on.size == 0 or off.size == 0:
            continue
        p1, p0 = float(on.mean()), float(off.mean())
        out[action] = {
            "rows": int(mine.sum()),
            "treated_rows": int(on.size),
            "observed_uplift": p1 - p0,
            "observed_uplift_se": math.sqrt(p1 * (1 - p1) / on.size + p0 * (1 - p0) / off.size),
            "mean_predicted_uplift": float(uplift[mine].mean()),
        }
    return out


def uplift_metrics(
    uplift: npt.NDArray[np.float64],
    propensity: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    treated: npt.NDArray[np.bool_],
    seed: int,
) -> dict[str, Any]:
    """Qini coefficients and curves of the uplift ranking, the propensity ranking and random targeting
    (averaged over 20 shuffles), and the observed uplift in the test rows."""
    rng = np.random.default_rng(seed)
    # Shuffle first so that ties do not follow the rows' (time) order.
    order = rng.permutation(y.size)
    up = qini_curve(uplift[order], y[order], treated[order])
    prop = qini_curve(propensity[order], y[order], treated[order])
    randoms = [qini_curve(rng.random(y.size), y, treated) for _ in range(20)]
    observed = float(y[treated].mean() - y[~treated].mean()) if treated.any() and (~treated).any() else 0.0
    return {
        "rows": int(y.size),
        "treated_rows": int(treated.sum()),
        "observed_uplift": observed,
        "mean_predicted_uplift": float(np.mean(uplift)),
        "qini": {
            "uplift_model": up.coefficient,
            "propensity_ranking": prop.coefficient,
            "random": float(np.mean([r.coefficient for r in randoms])),
        },
        "auuc": {"uplift_model": up.auuc, "propensity_ranking": prop.auuc},
        "qini_curve": {
            "fraction": list(QINI_POINTS),
            "uplift_model": [float(v) for v in up.at(QINI_POINTS)],
            "propensity_ranking": [float(v) for v in prop.at(QINI_POINTS)],
            "random": [float(f * up.gain[-1]) for f in QINI_POINTS],
        },
    }


def recode(data: TrainingSet, categories: Mapping[str, list[str]]) -> TrainingSet:
    """The same rows with each categorical column coded by ``categories`` (a model card's vocabulary);
    values the card does not know become missing."""
    x = data.x.copy()
    for name, vocabulary in categories.items():
        if name not in data.features:
            continue
        j = data.features.index(name)
        current = data.categories.get(name, [])
        target = {v: float(i) for i, v in enumerate(vocabulary)}
        mapping = np.array([target.get(v, np.nan) for v in current] + [np.nan])
        column = x[:, j]
        codes = np.where(np.isnan(column), len(current), column).astype(np.intp)
        x[:, j] = mapping[np.clip(codes, 0, len(current))]
    out = data.subset(np.arange(len(data)))
    out.x = x
    out.categories = dict(categories)
    return out


def _predict(booster: lgb.Booster, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(booster.predict(x, num_threads=1), dtype=np.float64)


def _require(data: TrainingSet, kind: str) -> None:
    if len(data) < 200:
        raise ValueError(f"{kind}: {len(data)} rows is too few to train and evaluate (need at least 200)")
    if data.y.min() == data.y.max():
        raise ValueError(f"{kind}: every row has the same outcome ({data.y[0]:g}); nothing to learn")
