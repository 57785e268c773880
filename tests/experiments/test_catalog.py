"""Experiments in the catalog: strict validation."""

from __future__ import annotations

import hashlib
import json

import pytest

from nextbest.catalog import parse_catalog
from nextbest.domain import ActionClass
from nextbest.errors import CatalogError

BASE = """\
version: 1
channels: {email: {}, sms: {}}
flows:
  cart: {entry_triggers: [cart_abandoned]}
  notices: {}
actions:
  - {id: cart_email, flow: cart, channel: email, class: triggered, triggers: [cart_abandoned]}
  - {id: receipt, flow: notices, channel: email, class: transactional, triggers: [order_placed]}
experiments:
"""

GOOD = """\
  - id: cart_test
    scope: {flows: [cart]}
    namespace: {id: checkout, start: 0, end: 0.5}
    start: 2026-11-01T00:00:00Z
    arms:
      - {id: control, weight: 0.5, no_action: true}
      - {id: sms, weight: 0.5, channel: sms, delay: 2h, parameters: {discount: 15}}
"""


def problems(experiments: str) -> str:
    with pytest.raises(CatalogError) as info:
        parse_catalog(BASE + experiments, "c.yaml")
    return "\n".join(info.value.problems)


def test_a_valid_experiment_compiles() -> None:
    (exp,) = parse_catalog(BASE + GOOD).experiments
    assert exp.seed == "cart_test" and exp.hash_version == 2
    assert [a.id for a in exp.arms] == ["control", "sms"]
    assert exp.arms[1].parameters == {"discount": "15"} and exp.arms[1].channel == "sms"
    assert exp.ranges == [(0.0, 0.5), (0.5, 1.0)]
    assert exp.covers("cart_email", "cart", ActionClass.TRIGGERED)
    assert not exp.covers("receipt", "notices", ActionClass.TRANSACTIONAL)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            ("weight: 0.5, channel", "weight: 0.6, channel"), "arm weights sum to 1.1, not 1", id="weights"
        ),
        pytest.param(("{id: sms,", "{id: control,"), "duplicate arm id 'control'", id="duplicate-arm"),
        pytest.param(("flows: [cart]", "flows: [carts]"), "unknown flow 'carts'", id="unknown-flow"),
        pytest.param(
            ("flows: [cart]", "flows: [notices]"), "'notices' is transactional", id="transactional-flow"
        ),
        pytest.param(
            ("{flows: [cart]}", "{actions: [receipt]}"),
            "'receipt' is transactional",
            id="transactional-action",
        ),
        pytest.param(
            ("{flows: [cart]}", "{classes: [transactional]}"),
            "never in experiments",
            id="transactional-class",
        ),
        pytest.param(("channel: sms", "channel: push"), "channel 'push' is not declared", id="arm-channel"),
        pytest.param(("start: 0, end: 0.5", "start: 0.5, end: 0.2"), "end > start", id="namespace-range"),
        pytest.param(
            ("start: 2026-11-01T00:00:00Z", "start: 2026-11-01T00:00:00Z\n    stop: 2026-10-01T00:00:00Z"),
            "stop must be after start",
            id="stop-before-start",
        ),
        pytest.param(("start: 2026-11-01T00:00:00Z", "start: 2026-11-01"), "timezone", id="naive-start"),
        pytest.param(("scope:", "hash_version: 3\n    scope:"), "hash_version", id="hash-version"),
        pytest.param(("- {id: sms,", "- {id: sms, wieght: 1,"), "unknown key", id="unknown-key"),
    ],
)
def test_experiment_problems(change: tuple[str, str], expected: str) -> None:
    assert expected in problems(GOOD.replace(*change))


def test_overlapping_ranges_in_one_namespace_are_an_error() -> None:
    second = GOOD.replace("cart_test", "cart_test_2").replace("start: 0, end: 0.5", "start: 0.4, end: 1")
    assert "overlaps cart_test's range [0, 0.5) in namespace 'checkout'" in problems(GOOD + second)
    disjoint = second.replace("start: 0.4, end: 1", "start: 0.5, end: 1")
    assert len(parse_catalog(BASE + GOOD + disjoint).experiments) == 2


def test_duplicate_experiment_ids() -> None:
    assert "duplicate experiment id 'cart_test'" in problems(GOOD + GOOD.replace("checkout", "other"))


SEND_TIME = """\
  - id: send_hour
    scope: {actions: [cart_email]}
    arms:
      - {id: fixed_hour, weight: 0.5, send_time: fixed}
      - {id: best_hour, weight: 0.5, send_time: optimize}
"""


def test_a_send_time_experiment_compiles() -> None:
    (exp,) = parse_catalog(BASE + SEND_TIME).experiments
    assert [a.send_time for a in exp.arms] == ["fixed", "optimize"]
    assert exp.sets_send_time


def test_an_arm_send_time_changes_the_fingerprint_and_none_keeps_the_old_one() -> None:
    (timed,) = parse_catalog(BASE + SEND_TIME).experiments
    swapped = SEND_TIME.replace("send_time: fixed", "send_time: X").replace(
        "send_time: optimize", "send_time: fixed"
    )
    (other,) = parse_catalog(BASE + swapped.replace("send_time: X", "send_time: optimize")).experiments
    assert timed.fingerprint != other.fingerprint
    (plain,) = parse_catalog(BASE + GOOD).experiments
    assert not plain.sets_send_time
    shape = {
        "arms": [[a.id, a.weight, a.no_action] for a in plain.arms],
        "coverage": plain.coverage,
        "namespace": ["checkout", 0.0, 0.5],
    }
    old = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]
    assert plain.fingerprint == old  # experiments running before arms could set send times keep theirs


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            (
                "{id: fixed_hour, weight: 0.5, send_time: fixed}",
                "{id: fixed_hour, weight: 0.5, no_action: true, send_time: fixed}",
            ),
            "a no_action arm sends nothing; it cannot set a send time",
            id="no-action",
        ),
        pytest.param(
            ("{actions: [cart_email]}", "{flows: [cart]}"),
            "must name its actions (scope.actions) and nothing else",
            id="flow-scope",
        ),
        pytest.param(
            ("{actions: [cart_email]}", "{actions: [cart_email], classes: [triggered]}"),
            "must name its actions",
            id="class-scope",
        ),
        pytest.param(
            ("weight: 0.5, send_time: fixed}", "weight: 0.5}"),
            "every arm of a send-time experiment sets send_time, and they differ",
            id="arm-without",
        ),
        pytest.param(
            ("send_time: optimize", "send_time: fixed"),
            "every arm of a send-time experiment sets send_time, and they differ",
            id="same-send-time",
        ),
        pytest.param(
            ("send_time: optimize", "send_time: best"),
            "send_time: Input should be 'fixed' or 'optimize'",
            id="unknown-value",
        ),
    ],
)
def test_send_time_experiment_problems(change: tuple[str, str], expected: str) -> None:
    assert expected in problems(SEND_TIME.replace(*change))


def test_a_flow_step_action_cannot_be_a_send_time_arm() -> None:
    stepped = BASE.replace(
        "cart: {entry_triggers: [cart_abandoned]}",
        "cart: {entry_triggers: [cart_abandoned], steps: [{after: 1h, actions: [cart_email]}]}",
    )
    with pytest.raises(CatalogError) as info:
        parse_catalog(stepped + SEND_TIME, "c.yaml")
    assert "'cart_email' is a flow step's action" in "\n".join(info.value.problems)
