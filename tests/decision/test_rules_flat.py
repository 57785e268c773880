"""Flat rules: ``context.cart_value`` read as the top-level variable ``context__cart_value``, set field by
field on a context per plan and thread. A flat rule must answer what the catalog's own program answers on
the nested variables — true, false, or the same error with the same text."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from nextbest.catalog import Action, CompiledRule, bundled_catalog_path, load_catalog
from nextbest.catalog.rules import compile_rule
from nextbest.decision.candidates import Refusal
from nextbest.decision.plan import Plans
from nextbest.decision.rules import RuleScope, ScopePlan, _same, check_rules, flat_rule, flatten
from nextbest.domain import DecisionRequest, ReasonCode, RequestContext
from nextbest.state import CustomerState, Journey

NOW = datetime(2026, 11, 23, 15, tzinfo=UTC)
BENCH_CATALOG = Path(__file__).resolve().parents[2] / "benchmarks" / "catalog_20.yaml"


@pytest.mark.parametrize(
    ("source", "flat"),
    [
        ("context.cart_value > 10.0", "context__cart_value > 10.0"),
        ("customer . orders_count>1", "customer__orders_count>1"),
        (
            'trigger == "bench_trigger" && context.time_zone == "Europe/Paris"',
            'trigger == "bench_trigger" && context__time_zone == "Europe/Paris"',
        ),
        ("context.attributes.vip == 'x'", "context__attributes.vip == 'x'"),
        # Inside a string literal nothing changes.
        ("context.page_category == 'context.x'", "context__page_category == 'context.x'"),
        ("!journey.opened", "!journey__opened"),
        # The products' count is an int variable of its own; the list stays for what else reads it.
        ("size(context.product_ids) > 0", "context__product_ids__size > 0"),
        ("context.product_ids . size() >= 2", "context__product_ids__size >= 2"),
        (
            '"a" in context.product_ids && size( context.product_ids ) > 1',
            '"a" in context__product_ids && context__product_ids__size > 1',
        ),
        ("size(context.product_ids_x) > 0", "size(context__product_ids_x) > 0"),
        (
            "'size(context.product_ids)' == context.page_category",
            "'size(context.product_ids)' == context__page_category",
        ),
        # Nothing to rewrite, or not safely: the original program stays.
        ("true", None),
        ('trigger == "x"', None),
        ("size(context) > 1", None),
        ("x.context.a > 1", None),
        ("context.size() > 1", None),
        ("has(context.attributes.vip)", None),
        ('r"x" == context.page_category', None),
        ('context.page_category == "a\\"b"', None),
        ('context.page_category == """x"""', None),
        ("[1].exists(context, context > 0)", None),
    ],
)
def test_flatten(source: str, flat: str | None) -> None:
    assert flatten(source) == flat


def _rule(source: str) -> CompiledRule:
    rule, problems = compile_rule(source)
    assert rule is not None, problems
    return rule


def test_a_flat_rule_reads_top_level_variables_and_a_bad_one_keeps_its_program() -> None:
    flat = flat_rule(_rule("context.cart_value >= 50.0 && size(context.product_ids) > 0"))
    assert flat.variables == {"context__cart_value", "context__product_ids__size"}
    kept = flat_rule(_rule("has(context.attributes.vip)"))
    assert kept.program is kept.rule.program and kept.variables == {"context"}


def _request(cart: float | None, products: tuple[str, ...], **attributes: str) -> DecisionRequest:
    return DecisionRequest(
        request_id="r",
        user_id="u",
        trigger="cart_abandoned",
        occurred_at=None,
        context=RequestContext(cart_value=cart, product_ids=products, time_zone="UTC", attributes=attributes),
    )


RULES = [
    "context.cart_value > 10.0 && size(context.product_ids) >= 2",
    '"a" in context.product_ids && context.product_ids.size() < 2',
    "customer.orders_count >= 1 || customer.total_revenue > 100.0",
    # Loads (the sample scopes pass) but divides by zero for a customer with two orders: RULE_ERROR.
    "100 / (customer.orders_count - 2) > 1",
    'has(context.attributes.vip) && context.attributes.vip == "yes"',
    'has(context.attributes.vip) && trigger == "cart_abandoned"',
    "journey.active && journey.hours_since_entry < 2.0",
    "!journey.opened && customer.days_since_last_order < 0.0",
]
REQUESTS = [_request(None, ()), _request(60.0, ("a", "b")), _request(5.0, ("a",), vip="yes")]
STATES = [
    CustomerState("u"),
    CustomerState("u", orders_count=2, revenue_total=150.0, last_order_at=NOW - timedelta(days=3)),
]
JOURNEYS = [Journey(active=False), Journey(active=True, entered_at=NOW - timedelta(hours=1), new=False)]


@pytest.mark.parametrize("source", RULES)
def test_check_rules_answers_as_the_original_program(source: str) -> None:
    """Every request, state and journey: the flat rule's refusal (reason and text) is the one the
    original program gives on a context of the nested variables."""
    rule = _rule(source)
    flat = flat_rule(rule)
    scope_plan = ScopePlan.of([flat], dict(rule.reads))
    for request, state, journey in itertools.product(REQUESTS, STATES, JOURNEYS):
        scope = RuleScope(state, request, NOW, scope_plan)
        got = check_rules(_Action(source), journey, scope, flow="f", when=None, rule=flat)
        try:
            passed = rule.evaluate(scope.original("f", journey))
            expected = None if passed else Refusal(ReasonCode.RULE_FALSE, f"rule is false: {source}")
        except Exception as exc:  # the original's error is the expectation
            expected = Refusal(ReasonCode.RULE_ERROR, f"rule {source!r} failed: {exc}")
        assert got == expected, (request, state, journey)


class _FakeAction:
    """What ``check_rules`` reads of an action: its id and its rule's source."""

    def __init__(self, source: str) -> None:
        self.id = "a"
        self.rule = _rule(source)


def _Action(source: str) -> Action:  # noqa: N802 - reads as the action it stands for
    return cast(Action, _FakeAction(source))


def test_each_thread_and_plan_has_its_context_and_a_decision_sees_its_own_values() -> None:
    catalog = load_catalog(BENCH_CATALOG)
    plan = Plans(catalog).plan("bench_trigger", ())
    first = RuleScope(STATES[0], REQUESTS[1], NOW, plan.scope).context("f", JOURNEYS[0], False)
    second = RuleScope(STATES[1], REQUESTS[2], NOW, plan.scope).context("f", JOURNEYS[0], False)
    assert first is second  # one per plan and thread, updated
    assert second.variables["context__cart_value"] == 5.0
    assert second.variables["customer__orders_count"] == 2


def test_the_bundled_catalogs_rules_are_flat() -> None:
    """The rules of the bundled and benchmark catalogs are flattened (a regression here costs every
    decision the maps' conversion, silently)."""
    for path in (bundled_catalog_path(), BENCH_CATALOG):
        catalog = load_catalog(path)
        for action in catalog.actions:
            if not action.rule.always_true and "has(" not in action.rule.source:
                flat = flat_rule(action.rule)
                assert not flat.variables & {"customer", "context", "journey"}, action.rule.source


def test_journey_is_updated_per_flow() -> None:
    rule = _rule("journey.active")
    flat = flat_rule(rule)
    scope = RuleScope(STATES[0], REQUESTS[0], NOW, ScopePlan.of([flat], {}))
    assert check_rules(_Action("journey.active"), JOURNEYS[1], scope, flow="a", when=None, rule=flat) is None
    refused = check_rules(_Action("journey.active"), JOURNEYS[0], scope, flow="b", when=None, rule=flat)
    assert refused is not None and refused.reason is ReasonCode.RULE_FALSE


@pytest.mark.parametrize(
    ("held", "value", "same"),
    [
        (1.0, 1.0, True),
        (0, 0.0, False),  # another type: CEL's int and double differ
        (0.0, -0.0, False),  # the sign of zero shows in a division
        (["a", "b"], ["a", "b"], True),
        (["a"], ["a", "b"], False),
        ({"a": "b"}, {"a": "b"}, False),  # maps are always set again
        (float("nan"), float("nan"), False),
        ("Europe/Paris", "Europe/Paris", True),
    ],
)
def test_a_variable_is_set_again_unless_it_holds_the_same_value(
    held: object, value: object, same: bool
) -> None:
    assert _same(held, value) is same


def test_decisions_in_one_thread_see_their_own_values_when_they_change_back_and_forth() -> None:
    rule = _rule("context.cart_value > 10.0 && customer.orders_count == 0")
    flat = flat_rule(rule)
    plan = ScopePlan.of([flat], dict(rule.reads))
    carts = [60.0, 5.0, 5.0, 60.0, 60.0, 60.0, 60.0]  # the sixth with a customer of two orders
    got = []
    for index, cart in enumerate(carts):
        state = STATES[index % 2 if index > 3 else 0]
        scope = RuleScope(state, _request(cart, ()), NOW, plan)
        got.append(
            check_rules(_Action(rule.source), JOURNEYS[0], scope, flow="f", when=None, rule=flat) is None
        )
    assert got == [True, False, False, True, True, False, True]
