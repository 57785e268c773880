"""The uplift learners: each finds a known heterogeneous effect, the card says which was kept and why,
and a shared-base model is served exactly as LightGBM predicts it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nextbest.models import features as feats
from nextbest.models.artifacts import ModelKind, promote, write_artifact
from nextbest.models.registry import ModelRegistry
from nextbest.training.datasets import TrainingSet
from nextbest.training.fit import DEFAULT_CHOICE, LEARNERS, train_uplift

pytestmark = pytest.mark.slow  # several LightGBM fits on 6,000 rows

_CART = feats.LOGGED.index("cart_value")


def _heterogeneous(n: int, seed: int = 2) -> tuple[TrainingSet, np.ndarray]:
    """Randomized rows where the message persuades (+20 pp) carts above 60 and puts off (-10 pp) the
    rest; a customer feature that does not interact with treatment moves the base rate."""
    rng = np.random.default_rng(seed)
    logged = rng.normal(size=(n, len(feats.LOGGED)))
    logged[:, _CART] = rng.uniform(20, 120, n)
    treated = rng.random(n) < 0.5
    effect = np.where(logged[:, _CART] > 60, 0.20, -0.10)
    p = np.clip(0.3 + 0.15 * np.tanh(logged[:, 0]) + effect * treated, 0.01, 0.99)
    data = TrainingSet(
        x=feats.matrix(logged, ["cart_reminder_email"] * n, {"cart_reminder_email": 0.0}),
        y=(rng.random(n) < p).astype(float),
        features=list(feats.FEATURES),
        feature_set=feats.FEATURE_SET,
        categorical=list(feats.CATEGORICAL),
        categories={feats.ACTION: ["cart_reminder_email"]},
        treated=treated,
        times=np.arange(n, dtype=float),
        flows=["cart_abandonment"],
    )
    return data, effect


@pytest.mark.parametrize("learner", LEARNERS)
def test_each_learner_finds_who_is_persuaded(learner: str) -> None:
    data, effect = _heterogeneous(6000)
    trained = train_uplift(data, seed=1, learner=learner)
    uplift = trained.predictions["uplift"]
    test = np.arange(len(data))[-uplift.size :]  # the time split's test period is the latest rows
    persuaded = effect[test] > 0
    assert uplift[persuaded].mean() > 0.1 and uplift[~persuaded].mean() < 0.0
    metrics = trained.card.metrics
    assert metrics["test"]["qini"]["uplift_model"] > metrics["test"]["qini"]["random"]
    assert trained.card.params["learner"] == learner == metrics["selection"]["chosen"]
    assert metrics["selection"]["by"] == "given" and set(metrics["selection"]["qini_on_validation"]) == set(
        LEARNERS
    )


def test_without_a_learner_the_best_on_the_validation_slice_is_kept() -> None:
    data, _ = _heterogeneous(6000)
    card = train_uplift(data, seed=1).card
    selection = card.metrics["selection"]
    qini = selection["qini_on_validation"]
    assert set(qini) == set(LEARNERS) and selection["by"] == "qini on the validation slice"
    # The transformed outcome is reported, never chosen unless asked for (it lost served).
    assert selection["among"] == list(DEFAULT_CHOICE) and "transformed-outcome" not in DEFAULT_CHOICE
    assert selection["chosen"] == max(DEFAULT_CHOICE, key=qini.get)
    assert card.params["learner"] == selection["chosen"]


def test_an_unknown_learner_is_refused() -> None:
    data, _ = _heterogeneous(400)
    with pytest.raises(ValueError, match="unknown uplift learner 'x'"):
        train_uplift(data, seed=1, learner="x")


def test_a_shared_base_model_is_served_as_lightgbm_predicts_it(tmp_path: Path) -> None:
    data, _ = _heterogeneous(6000)
    trained = train_uplift(data, seed=1, learner="shared-base")
    directory = write_artifact(tmp_path, trained.card, trained.files)
    promote(tmp_path, ModelKind.UPLIFT, directory.name)
    uplift = ModelRegistry(tmp_path).current.uplift
    assert uplift is not None
    x = data.x[-50:]
    treated, control = uplift.predict(x)
    assert np.max(np.abs(treated - uplift.treated.booster.predict(x, num_threads=1))) < 1e-9
    assert np.max(np.abs(treated - control - trained.predictions["uplift"][-50:])) < 1e-9
    # Each arm's model holds the shared trees and its own: more trees than the base alone.
    assert uplift.treated.booster.num_trees() > 1 and uplift.control.booster.num_trees() > 1


@pytest.mark.parametrize("learner", ["x-learner", "transformed-outcome", "ensemble"])
def test_an_effect_learner_is_served_as_trained(tmp_path: Path, learner: str) -> None:
    """The effect learners' P(treated) is the control model plus the weighted effect regressions: the
    registry serves exactly what training evaluated, and the card lists the effect files and weights."""
    data, _ = _heterogeneous(6000)
    trained = train_uplift(data, seed=1, learner=learner)
    effects = trained.card.params["effects"]
    assert effects and all(trained.card.files[role] == f"{role}.txt" for role in effects)
    if learner == "x-learner":  # e x tau_untreated + (1 - e) x tau_treated, e the treated share
        assert set(effects) == {"effect_treated", "effect_control"}
        assert abs(sum(effects.values()) - 1.0) < 1e-12 and 0.4 < effects["effect_control"] < 0.6
    if learner == "ensemble":  # each member's uplift at a third: its arms at +-1/3, its effects at 1/3
        members = {
            name: train_uplift(data, seed=1, learner=name).predictions["uplift"]
            for name in ("two-model", "shared-base", "x-learner")
        }
        mean = sum(members.values()) / 3
        assert np.max(np.abs(trained.predictions["uplift"] - mean)) < 1e-9
        assert effects["two_model_treated"] == pytest.approx(1 / 3)
        assert effects["shared_base_control"] == pytest.approx(-1 / 3)
    directory = write_artifact(tmp_path, trained.card, trained.files)
    promote(tmp_path, ModelKind.UPLIFT, directory.name)
    uplift = ModelRegistry(tmp_path).current.uplift
    assert uplift is not None and len(uplift.effects) == len(effects)
    x = data.x[-50:]
    treated, control = uplift.predict(x)
    assert np.max(np.abs(treated - control - trained.predictions["uplift"][-50:])) < 1e-9
    assert np.max(np.abs(control - trained.predictions["control"][-50:])) < 1e-9
    full = data.x[-50:].copy()
    scored_t, scored_c = uplift.score(full, ["cart_reminder_email"] * 50)
    assert np.max(np.abs(scored_t - treated)) < 1e-12 and np.max(np.abs(scored_c - control)) < 1e-12
    assert (
        trained.card.metrics["test"]["learners"][learner]["qini"]
        == trained.card.metrics["test"]["qini"]["uplift_model"]
    )


def test_an_effect_file_missing_from_the_card_is_refused(tmp_path: Path) -> None:
    data, _ = _heterogeneous(3000)
    trained = train_uplift(data, seed=1, learner="x-learner")
    files = dict(trained.files)
    del files["effect_control.txt"]
    card = trained.card.model_copy(
        update={"files": {k: v for k, v in trained.card.files.items() if k != "effect_control"}}
    )
    directory = write_artifact(tmp_path, card, files)
    promote(tmp_path, ModelKind.UPLIFT, directory.name)
    registry = ModelRegistry(tmp_path)
    assert registry.current.uplift is None
    status = next(s for s in registry.statuses if s.kind is ModelKind.UPLIFT)
    assert "effect_control" in status.detail


def test_the_train_command_keeps_the_learner_asked_for(tmp_path: Path) -> None:
    from nextbest.cli import _build_parser, main

    root = Path(__file__).resolve().parents[2]
    train = ["train", "uplift", "--csv", str(root / "tests" / "data" / "hillstrom.csv")]
    train += ["--schema", str(root / "benchmarks" / "hillstrom.yaml"), "--outcome", "visit"]
    assert main([*train, "--learner", "shared-base", "--models-dir", str(tmp_path)]) == 0
    (card,) = (tmp_path / "uplift").glob("*/card.json")
    assert '"learner": "shared-base"' in card.read_text()
    with pytest.raises(SystemExit, match="--learner chooses an uplift learner; propensity has none"):
        main(["train", "propensity", "--learner", "x-learner", "--models-dir", str(tmp_path)])
    # The command offers every learner training knows (its parser does not import LightGBM to list them).
    for name in LEARNERS:
        assert _build_parser().parse_args(["train", "uplift", "--learner", name]).learner == name


def test_the_card_prices_each_pooled_action_on_its_own_holdout() -> None:
    """Two actions' holdouts pooled: one persuades (+20 pp), the other does nothing. The pooled figures
    average them; the card's ``by_action`` shows each action's observed uplift on the test period (its
    own randomized rows) beside what the model predicts for it."""
    rng = np.random.default_rng(5)
    n = 8000
    logged = rng.normal(size=(n, len(feats.LOGGED)))
    logged[:, _CART] = rng.uniform(20, 120, n)
    actions = rng.choice(["cart_reminder_email", "cart_incentive_email"], n)
    treated = rng.random(n) < 0.5
    effect = np.where(actions == "cart_reminder_email", 0.20, 0.0)
    y = (rng.random(n) < 0.3 + effect * treated).astype(float)
    vocabulary = {"cart_incentive_email": 0.0, "cart_reminder_email": 1.0}
    data = TrainingSet(
        x=feats.matrix(logged, list(actions), vocabulary),
        y=y,
        features=list(feats.FEATURES),
        feature_set=feats.FEATURE_SET,
        categorical=list(feats.CATEGORICAL),
        categories={feats.ACTION: list(vocabulary)},
        treated=treated,
        times=np.arange(n, dtype=float),
        flows=["cart_abandonment"],
    )
    trained = train_uplift(data, seed=1, learner="x-learner")
    by_action = trained.card.metrics["test"]["by_action"]
    assert set(by_action) == set(vocabulary)
    test_rows = trained.card.metrics["test"]["rows"]
    assert sum(row["rows"] for row in by_action.values()) == test_rows
    test = np.arange(n)[-test_rows:]  # the time split's test period is the latest rows
    for action, row in by_action.items():
        mine = test[actions[test] == action]
        on, off = y[mine][treated[mine]], y[mine][~treated[mine]]
        assert row["rows"] == mine.size and row["treated_rows"] == on.size
        assert row["observed_uplift"] == pytest.approx(on.mean() - off.mean())
        truth = 0.20 if action == "cart_reminder_email" else 0.0
        assert abs(row["observed_uplift"] - truth) < 3 * row["observed_uplift_se"]
        assert row["mean_predicted_uplift"] == pytest.approx(
            trained.predictions["uplift"][actions[test] == action].mean()
        )
    # The model tells the two apart (how well is what the card is for: pooled, the null action's
    # predicted uplift is pulled towards the other's).
    assert (
        by_action["cart_reminder_email"]["mean_predicted_uplift"]
        > by_action["cart_incentive_email"]["mean_predicted_uplift"] + 0.1
    )


def _pooled(sizes: tuple[int, ...], seed: int = 3) -> tuple[TrainingSet, np.ndarray, np.ndarray]:
    """Three actions' randomized holdouts pooled: a0 persuades (+20 pp above a cart of 60, +5 pp
    below), a1 does nothing, a2 (few rows) persuades +10 pp. Returns the set, each row's action index
    and its true effect."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    logged = rng.normal(size=(n, len(feats.LOGGED)))
    logged[:, _CART] = rng.uniform(20, 120, n)
    names = [f"a{i}" for i in range(len(sizes))]
    actions = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(actions)
    treated = rng.random(n) < 0.5
    effect = np.select(
        [actions == 0, actions == 1], [np.where(logged[:, _CART] > 60, 0.20, 0.05), 0.0], default=0.10
    )
    p = np.clip(0.3 + 0.15 * np.tanh(logged[:, 0]) + effect * treated, 0.01, 0.99)
    data = TrainingSet(
        x=feats.matrix(logged, [names[a] for a in actions], feats.action_codes(names)),
        y=(rng.random(n) < p).astype(float),
        features=list(feats.FEATURES),
        feature_set=feats.FEATURE_SET,
        categorical=list(feats.CATEGORICAL),
        categories={feats.ACTION: names},
        treated=treated,
        times=np.arange(n, dtype=float),
        flows=["cart_abandonment"],
    )
    return data, actions, effect


def test_effects_per_action_do_not_lend_a_null_action_its_neighbours_effect() -> None:
    """Pooled, the X-learner's effect regressions (a few large leaves) price the action that does
    nothing at part of its neighbour's effect; with a pair per action it is priced at about nothing,
    and the action with too few rows of its own shares the pooled pair."""
    data, actions, effect = _pooled((8000, 8000, 1000))
    by_action = train_uplift(data, seed=1, learner="x-learner-by-action")
    pooled = train_uplift(data, seed=1, learner="x-learner")
    test = actions[-by_action.predictions["uplift"].size :]
    null = by_action.predictions["uplift"][test == 1].mean()
    assert abs(null) < 0.005 < pooled.predictions["uplift"][test == 1].mean()
    strong = effect[-test.size :][test == 0].mean()
    assert abs(by_action.predictions["uplift"][test == 0].mean() - strong) < 0.03
    scoped = by_action.card.params["effect_actions"]
    assert sorted(map(tuple, scoped.values())) == [("a0",), ("a0",), ("a1",), ("a1",)]
    assert {"effect_treated", "effect_control"} <= set(by_action.card.params["effects"])  # a2's pair
    assert "effect_actions" not in pooled.card.params


def test_effects_per_action_are_served_as_trained(tmp_path: Path) -> None:
    data, actions, _ = _pooled((8000, 8000, 1000))
    trained = train_uplift(data, seed=1, learner="x-learner-by-action")
    directory = write_artifact(tmp_path, trained.card, trained.files)
    promote(tmp_path, ModelKind.UPLIFT, directory.name)
    uplift = ModelRegistry(tmp_path).current.uplift
    assert uplift is not None and len(uplift.effects) == 6
    rows = slice(-300, None)
    treated, control = uplift.predict(data.x[rows])
    assert np.max(np.abs(treated - control - trained.predictions["uplift"][rows])) < 1e-9
    # From a candidate matrix, with the rows' action ids, as the engine scores: the same.
    ids = [f"a{a}" for a in actions[rows]]
    scored_t, scored_c = uplift.score(data.x[rows].copy(), ids)
    assert np.max(np.abs(scored_t - treated)) < 1e-12 and np.max(np.abs(scored_c - control)) < 1e-12
    # An action with too few rows of its own (a2), or one the model never saw, gets the pooled pair
    # alone: the effects no action names, as in training.
    pooled = [(m, w) for (m, w), scope in zip(uplift.effects, uplift.scopes, strict=True) if not scope]
    assert len(pooled) == 2
    for action in ("a2", "never-seen"):
        got_t, got_c = uplift.score(data.x[rows].copy(), [action] * 300)
        want = got_c + sum(w * m.score(data.x[rows].copy(), [action] * 300) for m, w in pooled)
        assert np.max(np.abs(got_t - np.clip(want, 0.0, 1.0))) < 1e-12
        assert not np.allclose(got_t - got_c, 0.0)


def test_a_card_whose_effect_actions_are_not_lists_of_ids_is_refused(tmp_path: Path) -> None:
    data, _, _ = _pooled((3000, 3000, 500))
    trained = train_uplift(data, seed=1, learner="x-learner-by-action")
    params = {**trained.card.params, "effect_actions": {"effect_treated_0": "a0"}}
    directory = write_artifact(tmp_path, trained.card.model_copy(update={"params": params}), trained.files)
    promote(tmp_path, ModelKind.UPLIFT, directory.name)
    registry = ModelRegistry(tmp_path)
    assert registry.current.uplift is None
    status = next(s for s in registry.statuses if s.kind is ModelKind.UPLIFT)
    assert status.state == "corrupt" and "effect_actions" in status.detail
