"""``rule_reads``: what a rule reads, so a decision converts only that to CEL. It may say too much, never
too little: a rule evaluated on only the fields it is said to read gives what it gives on everything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nextbest.catalog import bundled_catalog_path, load_catalog
from nextbest.catalog.rules import compile_rule, merge_reads, rule_reads, sample_scopes

BENCH_CATALOG = Path(__file__).resolve().parents[2] / "benchmarks" / "catalog_20.yaml"


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ("context.cart_value > 10.0", {"context": {"cart_value"}}),
        (
            "context.cart_value >= 50.0 && size(context.product_ids) > 0",
            {"context": {"cart_value", "product_ids"}},
        ),
        ("customer . orders_count > 1", {"customer": {"orders_count"}}),
        ('has(context.attributes.vip) && context.attributes.vip == "yes"', {"context": {"attributes"}}),
        # Anything but `name.field` reads the whole variable.
        ('context["cart_value"] > 1.0', {"context": None}),
        ("size(customer) > 0", {"customer": None}),
        ('trigger == "cart_abandoned"', {"trigger": None}),
        # A field of something else is not the variable.
        ("[1].exists(m, m.context == 1)", {}),
        # Inside a string it still counts: too much, never too little.
        ("'context' == trigger", {"context": None, "trigger": None}),
        ("true", {}),
    ],
)
def test_reads(source: str, reads: dict[str, set[str] | None]) -> None:
    expected = {k: (frozenset(v) if v is not None else None) for k, v in reads.items()}
    assert rule_reads(source) == expected


def test_merge() -> None:
    merged = merge_reads(
        [rule_reads("context.a > 1"), rule_reads("context.b > 1"), rule_reads("size(customer) > 1")]
    )
    assert merged == {"context": frozenset({"a", "b"}), "customer": None}
    assert merge_reads([rule_reads("size(context) > 1"), rule_reads("context.b > 1")]) == {"context": None}


def _only(scope: dict[str, Any], reads: dict[str, frozenset[str] | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, fields in reads.items():
        value = scope[name]
        out[name] = value if fields is None else {f: value[f] for f in fields if f in value}
    return out


@pytest.mark.parametrize("path", [bundled_catalog_path(), BENCH_CATALOG], ids=["bundled", "bench"])
def test_catalog_rules_give_the_same_on_what_they_read(path: Path) -> None:
    catalog = load_catalog(path)
    rules = [a.rule for a in catalog.actions] + [
        s.when for f in catalog.flows.values() for s in f.steps if s.when
    ]
    checked = 0
    for rule in rules:
        if rule.always_true:
            continue
        for scope in sample_scopes():
            assert rule.program.execute(_only(scope, dict(rule.reads))) == rule.program.execute(scope), (
                rule.source
            )
            checked += 1
    assert checked > 0


def test_a_missed_field_would_be_caught() -> None:
    # The check above can fail: a rule evaluated without a field it reads errors.
    rule, problems = compile_rule("context.cart_value > 1.0 && customer.orders_count > 0")
    assert rule is not None and not problems
    scope = sample_scopes()[1]
    with pytest.raises((KeyError, RuntimeError, ValueError)):
        rule.program.execute(_only(scope, {"context": frozenset({"cart_value"})}))
