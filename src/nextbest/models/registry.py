"""The model registry: loads the promoted version of each kind, checks it, and says what it found.

A model that is missing, corrupt (a file that does not match its card's digest or does not parse) or
incompatible (trained on other features than the server builds) is not used: its status says why, and
the actions it would have scored fall back (declared base propensity; send when due). Loading never
raises. ``reload`` swaps the whole set at once, so a decision scores with one consistent set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from nextbest.models import features as feats
from nextbest.models.artifacts import ModelCard, ModelKind, promoted_version, read_card
from nextbest.models.churn import CHURN_FEATURE_SET, CHURN_FEATURES, SCORE_FIELDS, CustomerScorer
from nextbest.models.compiled import CompiledForest, Forest, ForestCompiler, LightGBMForest
from nextbest.models.lightgbm_serving import import_lightgbm
from nextbest.models.send_time import HOURS_OF_WEEK, SendTimeModel

if TYPE_CHECKING:
    import lightgbm as lgb
else:  # without scikit-learn and pandas, which serving does not use (see lightgbm_serving)
    lgb = import_lightgbm()

__all__ = [
    "BinaryModel",
    "ModelRegistry",
    "ModelSet",
    "ModelState",
    "ModelStatus",
    "UpliftModel",
    "effect_rows",
    "load_binary",
    "load_uplift",
]

logger = logging.getLogger(__name__)


class ModelState(StrEnum):
    LOADED = "loaded"
    MISSING = "missing"  # nothing promoted (or no models directory): fallbacks, by design
    CORRUPT = "corrupt"
    INCOMPATIBLE = "incompatible"


@dataclass(frozen=True, slots=True)
class ModelStatus:
    kind: ModelKind
    state: ModelState
    version: str = ""
    detail: str = ""

    @property
    def healthy(self) -> bool:
        """Missing is a choice (nothing promoted); corrupt or incompatible is a fault."""
        return self.state in (ModelState.LOADED, ModelState.MISSING)


@dataclass(frozen=True)
class BinaryModel:
    """A LightGBM binary classifier over the features its card lists (by name, see
    ``features.Layout``). It scores with LightGBM until a ``ForestCompiler`` hands it its compiled
    trees, checked equal to LightGBM's predictions (``nextbest.models.compiled``)."""

    booster: lgb.Booster
    card: ModelCard
    codes: Mapping[str, float]
    layout: feats.Layout = field(init=False, repr=False, compare=False)
    forest: Forest = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", feats.Layout.of(self.card.features))
        object.__setattr__(self, "forest", LightGBMForest(self.booster))

    @property
    def reference(self) -> LightGBMForest:
        """LightGBM's own prediction, whatever scores now."""
        forest = self.forest
        return forest if isinstance(forest, LightGBMForest) else LightGBMForest(self.booster)

    @property
    def num_feature(self) -> int:
        return len(self.card.features)

    @property
    def compiled(self) -> bool:
        return isinstance(self.forest, CompiledForest)

    def use(self, forest: Forest) -> None:
        """Scores with ``forest`` from now on (one attribute swap: a call in flight finishes with the
        forest it started with)."""
        object.__setattr__(self, "forest", forest)

    def predict(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """P(convert) for rows of the model's features (``layout`` order)."""
        return self.forest.predict(x)

    def score(self, full: npt.NDArray[np.float64], action_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        """P(convert) for the rows of a ``features.candidate_matrix``, one per action (its action column
        is overwritten with this model's codes)."""
        return self.forest.predict(self.layout.select(full, action_ids, self.codes))


@dataclass(frozen=True)
class UpliftModel:
    """P(convert | treated) and P(convert | untreated), for the ``actions`` of ``flows`` it was trained
    on (all of their actions when ``actions`` is empty). A two-model learner's come from its two
    classifiers; an effect learner's (``effects``: regressions of the uplift, each with its weight, as
    the X-learner and the transformed-outcome learner train them) P(convert | treated) is the control
    model's prediction plus the weighted sum of its effects, clipped to [0, 1]. ``scopes`` (one per
    effect, or none) names the actions each effect prices; an effect with an empty scope prices every
    action no other effect names (a learner with an effect regression per action and a pooled one for
    the actions with too few rows of their own)."""

    treated: BinaryModel
    control: BinaryModel
    card: ModelCard
    flows: frozenset[str]
    actions: frozenset[str] = frozenset()
    effects: tuple[tuple[BinaryModel, float], ...] = ()
    scopes: tuple[frozenset[str], ...] = ()

    def __post_init__(self) -> None:
        if not self.scopes:  # one per effect: an empty scope prices every action no other effect names
            object.__setattr__(self, "scopes", (frozenset(),) * len(self.effects))
        if len(self.scopes) != len(self.effects):
            raise ValueError("an uplift model needs one scope per effect")

    def covers(self, action_id: str, flow: str) -> bool:
        return flow in self.flows and (not self.actions or action_id in self.actions)

    def predict(self, x: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        control = self.control.predict(x)
        if not self.effects:
            return self.treated.predict(x), control
        ids = (
            feats.action_ids(x[:, self.card.features.index(feats.ACTION)], self.card.categories[feats.ACTION])
            if any(self.scopes)
            else []
        )
        treated = control.copy()
        for (model, weight), rows in zip(self.effects, effect_rows(self.scopes, ids), strict=True):
            if rows is None:
                treated += weight * model.predict(x)
            elif rows.size:
                treated[rows] += weight * model.predict(x[rows])
        return np.clip(treated, 0.0, 1.0), control

    def score(
        self, full: npt.NDArray[np.float64], action_ids: Sequence[str]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """P(convert | treated) and P(convert | untreated) for the rows of a ``candidate_matrix``."""
        control = self.control.score(full, action_ids)
        if not self.effects:
            return self.treated.score(full, action_ids), control
        treated = control.copy()
        for (model, weight), rows in zip(self.effects, effect_rows(self.scopes, action_ids), strict=True):
            if rows is None:
                treated += weight * model.score(full, action_ids)
            elif rows.size:
                treated[rows] += weight * model.score(full[rows], [action_ids[i] for i in rows])
        return np.clip(treated, 0.0, 1.0), control


def effect_rows(
    scopes: Sequence[frozenset[str]], action_ids: Sequence[str]
) -> list[npt.NDArray[np.intp] | None]:
    """For each effect of ``scopes``, the rows (by their ``action_ids``) it prices: None for all of
    them when no effect names an action (an effect learner pooled over every action), else the rows of
    its actions, or, for an effect with an empty scope, of the actions no effect names."""
    if not any(scopes):
        return [None] * len(scopes)
    named = frozenset().union(*scopes)
    out: list[npt.NDArray[np.intp] | None] = []
    for scope in scopes:
        if scope:
            rows = [i for i, a in enumerate(action_ids) if a in scope]
        else:
            rows = [i for i, a in enumerate(action_ids) if a not in named]
        out.append(np.asarray(rows, dtype=np.intp))
    return out


@dataclass(frozen=True)
class ModelSet:
    propensity: BinaryModel | None = None
    uplift: UpliftModel | None = None
    send_time: SendTimeModel | None = None
    churn: CustomerScorer | None = None
    statuses: tuple[ModelStatus, ...] = ()
    versions: Mapping[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return all(s.healthy for s in self.statuses)


class _LoadError(Exception):
    def __init__(self, state: ModelState, detail: str) -> None:
        super().__init__(detail)
        self.state = state
        self.detail = detail


def load_binary(
    directory: Path, card: ModelCard, role: str, compiler: ForestCompiler | None = None
) -> BinaryModel:
    """One LightGBM model file of a checked card; with a ``compiler``, compiled trees when they are
    ready (at once from its cache, else in the background)."""
    name, blob, booster = _booster(directory, card, role)
    model = BinaryModel(booster, card, feats.action_codes(card.categories.get(feats.ACTION, [])))
    probe = np.full((1, len(card.features)), np.nan)
    if not np.all(np.isfinite(model.predict(probe))):
        raise _LoadError(ModelState.CORRUPT, f"{name} predicts a non-finite value")
    if compiler is not None:
        compiler.attach(model, blob)
    return model


def _booster(directory: Path, card: ModelCard, role: str) -> tuple[str, bytes, lgb.Booster]:
    """The LightGBM model file of ``role`` on a checked card: its name, its bytes and the booster, whose
    features must be the card's."""
    name = card.files.get(role)
    if name is None:
        raise _LoadError(ModelState.CORRUPT, f"the card lists no {role!r} file")
    blob = _verified(directory, card, name)
    try:
        booster = lgb.Booster(model_str=blob.decode())
    except (lgb.basic.LightGBMError, UnicodeDecodeError, ValueError) as exc:
        raise _LoadError(ModelState.CORRUPT, f"{name} does not load: {exc}") from exc
    if booster.feature_name() != card.features:
        raise _LoadError(
            ModelState.INCOMPATIBLE,
            f"{name} has features {booster.feature_name()}, its card lists {card.features}",
        )
    return name, blob, booster


def _verified(directory: Path, card: ModelCard, name: str) -> bytes:
    try:
        blob = (directory / name).read_bytes()
    except OSError as exc:
        raise _LoadError(ModelState.CORRUPT, f"cannot read {name}: {exc.strerror}") from exc
    expected = card.sha256.get(name)
    if expected is None or hashlib.sha256(blob).hexdigest() != expected:
        raise _LoadError(ModelState.CORRUPT, f"{name} does not match the SHA-256 in its card")
    return blob


def _check_features(card: ModelCard) -> None:
    """The card's features must be ones the server builds, by name, in any order or subset."""
    if card.feature_set != feats.FEATURE_SET:
        raise _LoadError(
            ModelState.INCOMPATIBLE,
            f"trained on feature set {card.feature_set!r}; the server builds {feats.FEATURE_SET!r} "
            f"({', '.join(feats.FEATURES)})",
        )
    unknown = [f for f in card.features if f not in feats.FEATURES]
    if unknown or not card.features:
        raise _LoadError(
            ModelState.INCOMPATIBLE,
            f"features the server does not build: {', '.join(unknown) or 'none listed'} (it builds "
            f"{', '.join(feats.FEATURES)})",
        )


def _load_propensity(directory: Path, card: ModelCard, compiler: ForestCompiler | None) -> BinaryModel:
    _check_features(card)
    return load_binary(directory, card, "model", compiler)


def _load_uplift(directory: Path, card: ModelCard, compiler: ForestCompiler | None) -> UpliftModel:
    _check_features(card)
    if not card.flows:
        raise _LoadError(ModelState.INCOMPATIBLE, "the card names no flows to score")
    return load_uplift(directory, card, compiler)


def load_uplift(directory: Path, card: ModelCard, compiler: ForestCompiler | None = None) -> UpliftModel:
    """An uplift model's files as its card lists them: the two classifiers and, for an effect learner,
    its effect regressions with their weights (``params.effects``: file role -> weight) and, for one
    with an effect per action, the actions each prices (``params.effect_actions``: file role -> action
    ids; a role it does not list prices the actions no role lists)."""
    weights = card.params.get("effects", {})
    if not isinstance(weights, dict) or not all(
        isinstance(w, int | float) and math.isfinite(w) for w in weights.values()
    ):
        raise _LoadError(ModelState.CORRUPT, "params.effects must map effect files to finite weights")
    scoped = card.params.get("effect_actions", {})
    if not (
        isinstance(scoped, dict)
        and set(scoped) <= set(weights)
        and all(isinstance(a, list) and all(isinstance(i, str) for i in a) for a in scoped.values())
    ):
        raise _LoadError(
            ModelState.CORRUPT, "params.effect_actions must map effect files to lists of action ids"
        )
    return UpliftModel(
        load_binary(directory, card, "treated", compiler),
        load_binary(directory, card, "control", compiler),
        card,
        frozenset(card.flows),
        frozenset(card.actions),
        tuple((load_binary(directory, card, role, compiler), float(w)) for role, w in weights.items()),
        tuple(frozenset(scoped.get(role, ())) for role in weights) if scoped else (),
    )


def _load_send_time(directory: Path, card: ModelCard, compiler: ForestCompiler | None) -> SendTimeModel:
    name = card.files.get("model", "")
    blob = _verified(directory, card, name)
    try:
        spec: dict[str, Any] = json.loads(blob)
        model = SendTimeModel(
            np.asarray(spec["population"], dtype=np.float64),
            float(spec["strength"]),
            bool(spec.get("day_pooling", False)),  # models trained before it existed do not pool
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise _LoadError(ModelState.CORRUPT, f"{name} is not a send-time model: {exc}") from exc
    if card.features != [f"hour_of_week_{h}" for h in range(HOURS_OF_WEEK)]:
        raise _LoadError(ModelState.INCOMPATIBLE, "a send-time card must list the 168 hours of the week")
    return model


def _load_churn(directory: Path, card: ModelCard, compiler: ForestCompiler | None) -> CustomerScorer:
    """The customer scores' two classifiers (LightGBM: they score in bulk, where its per-call cost is
    spread over a page of customers)."""
    if card.feature_set != CHURN_FEATURE_SET or card.features != list(CHURN_FEATURES):
        raise _LoadError(
            ModelState.INCOMPATIBLE,
            f"trained on {card.feature_set!r} {card.features}; nextbest builds {CHURN_FEATURE_SET!r} "
            f"{list(CHURN_FEATURES)}",
        )
    heads: dict[str, LightGBMForest] = {}
    for role in SCORE_FIELDS.values():
        _, _, booster = _booster(directory, card, role)
        heads[role] = LightGBMForest(booster)
    return CustomerScorer(
        heads["churn"],
        heads["purchase"],
        card.version,
        float(card.params.get("horizon_days", 0.0)),
        float(card.params.get("window_days", 0.0)),
    )


_LOADERS: dict[ModelKind, Callable[[Path, ModelCard, ForestCompiler | None], Any]] = {
    ModelKind.PROPENSITY: _load_propensity,
    ModelKind.UPLIFT: _load_uplift,
    ModelKind.SEND_TIME: _load_send_time,
    ModelKind.CHURN: _load_churn,
}


def _load(root: Path | None, kind: ModelKind, compiler: ForestCompiler | None) -> tuple[Any, ModelStatus]:
    if root is None:
        return None, ModelStatus(kind, ModelState.MISSING, detail="no models directory configured")
    version = promoted_version(root, kind)
    if version is None:
        return None, ModelStatus(kind, ModelState.MISSING, detail=f"no {kind.value} model promoted in {root}")
    directory = root / kind.value / version
    try:
        try:
            card = read_card(directory)
        except FileNotFoundError as exc:
            raise _LoadError(ModelState.MISSING, f"promoted version {version} has no card") from exc
        except ValueError as exc:
            raise _LoadError(ModelState.CORRUPT, f"the card of {version} is invalid: {exc}") from exc
        if card.kind is not kind or card.version != version:
            raise _LoadError(
                ModelState.CORRUPT, f"the card of {version} describes {card.kind} {card.version}"
            )
        model = _LOADERS[kind](directory, card, compiler)
    except _LoadError as problem:
        return None, ModelStatus(kind, problem.state, version, problem.detail)
    except Exception as exc:  # a model never takes the service down
        logger.exception("unexpected failure loading %s %s", kind.value, version)
        return None, ModelStatus(kind, ModelState.CORRUPT, version, f"{type(exc).__name__}: {exc}")
    return model, ModelStatus(kind, ModelState.LOADED, version, f"loaded from {directory}")


class ModelRegistry:
    """The promoted models under ``root``; ``current`` is swapped whole by ``reload``. With a
    ``compiler``, the models' trees are compiled (see ``nextbest.models.compiled``); without one they
    score with LightGBM."""

    def __init__(self, root: Path | None, compiler: ForestCompiler | None = None) -> None:
        self.root = root
        self.compiler = compiler
        self._lock = threading.Lock()
        self.current = self._load_all()

    def reload(self) -> ModelSet:
        with self._lock:
            self.current = self._load_all()
        return self.current

    @property
    def statuses(self) -> Sequence[ModelStatus]:
        return self.current.statuses

    def _load_all(self) -> ModelSet:
        loaded: dict[ModelKind, Any] = {}
        statuses = []
        for kind in ModelKind:
            model, status = _load(self.root, kind, self.compiler)
            loaded[kind] = model
            statuses.append(status)
            log = logger.info if status.healthy else logger.error
            log("model %s: %s %s%s", kind.value, status.state.value, status.version, f" ({status.detail})")
        return ModelSet(
            propensity=loaded[ModelKind.PROPENSITY],
            uplift=loaded[ModelKind.UPLIFT],
            send_time=loaded[ModelKind.SEND_TIME],
            churn=loaded[ModelKind.CHURN],
            statuses=tuple(statuses),
            versions={s.kind.value: s.version for s in statuses if s.state is ModelState.LOADED},
        )
