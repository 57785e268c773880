from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from nextbest.catalog import bundled_catalog_path, load_catalog, parse_catalog
from nextbest.domain import ActionClass, Channel, EventType
from nextbest.errors import CatalogError

VALID = """\
version: 1
channels:
  email: {}
  onsite: {requires_consent: false}
flows:
  cart: {priority: 80, entry_triggers: [cart_abandoned], exit_on: [order_placed]}
actions:
  - id: cart_email
    flow: cart
    channel: email
    class: triggered
    triggers: [cart_abandoned]
    rule: context.cart_value > 10.0
    delay: 90m
    value: 50
    parameters: {template: t1, discount: 10, urgent: true}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "c.yaml")
    return info.value.problems


def test_the_bundled_catalog_covers_the_lifecycle_flows() -> None:
    catalog = load_catalog(bundled_catalog_path())
    flows = {
        "welcome",
        "browse_abandonment",
        "cart_abandonment",
        "order_notices",
        "post_purchase",
        "cross_sell",
        "replenishment",
        "winback",
        "vip",
        "back_in_stock",
        "promo",
    }
    assert flows <= set(catalog.flows)
    assert {a.channel for a in catalog.actions} == {Channel.EMAIL, Channel.SMS, Channel.PUSH, Channel.ONSITE}
    assert {a.action_class for a in catalog.actions} == set(ActionClass)
    cart = [a for a in catalog.actions if a.flow == "cart_abandonment"]
    assert len(cart) >= 3
    assert catalog.flows["cart_abandonment"].exit_on == {EventType.ORDER_PLACED}


def test_a_valid_catalog_compiles() -> None:
    catalog = parse_catalog(VALID)
    (action,) = catalog.actions
    assert action.delay == timedelta(minutes=90)
    assert action.parameters == {"template": "t1", "discount": "10", "urgent": "true"}
    assert catalog.actions_for("cart_abandoned") == (action,)
    assert catalog.triggers == {"cart_abandoned"}
    assert len(catalog.version) == 12
    assert parse_catalog(VALID).version == catalog.version
    assert parse_catalog(VALID + "\n# changed\n").version != catalog.version
    assert action.value_for(120.0) == 50.0  # a declared value, whatever the cart


def test_an_action_valued_by_the_cart_puts_the_requests_cart_at_stake() -> None:
    (action,) = parse_catalog(VALID.replace("value: 50", "value: 50\n    value_from: cart_value")).actions
    assert action.value_for(120.0) == 120.0
    assert action.value_for(None) == 50.0  # a request without a cart: the declared value


def test_an_action_valued_by_the_average_order_puts_the_customers_usual_order_at_stake() -> None:
    (action,) = parse_catalog(VALID.replace("value: 50", "value: 50\n    value_from: average_order")).actions
    assert action.value_for(120.0, 75.0) == 75.0  # the customer's average order, not the cart
    assert action.value_for(120.0, None) == 50.0  # no order yet: the declared value


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            ("priority: 80", "priority: 80, colour: red"),
            "c.yaml:6: flows.cart.colour: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            ("channel: email", "channel: fax"),
            "actions[0].channel: unknown value 'fax'",
            id="unknown-channel-name",
        ),
        pytest.param(
            ("channel: email", "channel: sms"),
            "actions[0].channel: unknown channel 'sms': not declared",
            id="channel-not-declared",
        ),
        pytest.param(
            ("flow: cart", "flow: carts"), "actions[0].flow: unknown flow 'carts'", id="unknown-flow"
        ),
        pytest.param(
            ("rule: context.cart_value > 10.0", "rule: context.cart_value >"),
            "CEL syntax error",
            id="cel-syntax",
        ),
        pytest.param(
            ("rule: context.cart_value > 10.0", "rule: context.cart_vaule > 10.0"),
            "actions[0].rule: unknown field or missing key 'cart_vaule'",
            id="cel-unknown-field",
        ),
        pytest.param(
            ("rule: context.cart_value > 10.0", "rule: basket.value > 1"),
            "actions[0].rule: Undefined variable",
            id="cel-unknown-variable",
        ),
        pytest.param(
            ("rule: context.cart_value > 10.0", "rule: context.cart_value + 1 > 2.0"),
            "CEL type error",
            id="cel-type-error",
        ),
        pytest.param(
            ("rule: context.cart_value > 10.0", "rule: context.cart_value"),
            "must evaluate to a bool",
            id="cel-not-bool",
        ),
        pytest.param(("delay: 90m", "delay: soon"), "actions[0].delay", id="bad-duration"),
        pytest.param(
            ("class: triggered", "class: urgent"), "actions[0].class: unknown value 'urgent'", id="bad-class"
        ),
        pytest.param(
            ("exit_on: [order_placed]", "exit_on: [ordered]"), "flows.cart.exit_on[0]", id="bad-exit"
        ),
        pytest.param(("version: 1", "version: 2"), "version", id="schema-version"),
        pytest.param(
            ("value: 50", "value: 50\n    value_from: basket"), "actions[0].value_from", id="bad-value-from"
        ),
        pytest.param(
            ("value: 50", "value: 50\n    discount_parameter: percent_off"),
            "actions[0].discount_parameter: names 'percent_off', which is not among the action's parameters",
            id="discount-parameter-missing",
        ),
    ],
)
def test_each_problem_names_file_line_path_and_reason(change: tuple[str, str], expected: str) -> None:
    found = problems(VALID.replace(*change))
    assert any(expected in p for p in found), found
    assert all(p.startswith("c.yaml") for p in found)


def test_a_discount_parameter_is_read_as_a_percent_and_checked_in_every_arm() -> None:
    text = VALID.replace("value: 50", "value: 50\n    discount_parameter: discount")
    (action,) = parse_catalog(text).actions
    assert action.discount == pytest.approx(0.10)
    arms = """
experiments:
  - id: deeper
    scope: {actions: [cart_email]}
    arms:
      - {id: control, weight: 0.5}
      - {id: more, weight: 0.5, parameters: {discount: "%s"}}
"""
    parse_catalog(text + arms % "15")
    found = problems(text + arms % "lots")
    assert any(
        "experiments[0].arms[1].parameters.discount: a discount must be a number of percent" in p
        for p in found
    ), found
    for bad, reason in (("ten", "a number of percent, got 'ten'"), ("120", "between 0 and 100 percent")):
        found = problems(text.replace("discount: 10,", f"discount: {bad},"))
        assert any(f"actions[0].parameters.discount: a discount must be {reason}" in p for p in found), found
    # An action without a discount_parameter gives nothing away, whatever its parameters say.
    (plain,) = parse_catalog(VALID).actions
    assert plain.discount == 0.0


def test_duplicates_are_errors_and_every_problem_is_listed() -> None:
    text = VALID.replace("flows:\n", "flows:\n  cart: {}\n") + VALID[VALID.index("  - id") :]
    text = text.replace("delay: 90m", "delay: 90m\n    delay: 2h", 1).replace(
        "channel: email", "channel: ads", 1
    )
    found = problems(text)
    joined = "\n".join(found)
    assert "flows.cart: duplicate key (first on line" in joined
    assert "actions[0].delay: duplicate key" in joined
    assert "actions[0].channel: unknown channel 'ads'" in joined
    assert "actions[1].id: duplicate action id 'cart_email' (first at actions[0])" in joined
    assert len(found) == 4


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
    assert problems("") == ["c.yaml: the catalog is empty"]
    assert "not valid YAML" in problems("a: [")[0]
