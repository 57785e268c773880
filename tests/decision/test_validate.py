"""The validate stage refuses, naming the field, everything the database would refuse."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from nextbest.catalog import Catalog, bundled_catalog_path, load_catalog
from nextbest.decision.validate import validate_event, validate_request
from nextbest.domain import DecisionRequest, Event, EventType, OrderItem, RequestContext
from nextbest.errors import MAX_VIOLATIONS, FieldViolation, InvalidArgumentError

NOW = datetime(2026, 11, 2, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(bundled_catalog_path())


def _request(**context: object) -> DecisionRequest:
    return DecisionRequest("r-1", "u-1", "cart_abandoned", NOW, RequestContext(**context))  # type: ignore[arg-type]


def _fields(violations: list[FieldViolation]) -> list[str]:
    return [v.field for v in violations]


def test_a_valid_request_has_no_violations(catalog: Catalog) -> None:
    assert validate_request(_request(time_zone="Europe/Paris", product_ids=("sku-1",)), catalog) == []


@pytest.mark.parametrize(
    "zone",
    ["America", "x" * 300, "Mars/Olympus", "Europe/Paris\x00", "../../etc/passwd", "/etc/localtime"],
    ids=["directory", "300-chars", "unknown", "nul", "traversal", "absolute"],
)
def test_a_bad_time_zone_is_a_violation_not_an_exception(catalog: Catalog, zone: str) -> None:
    violations = validate_request(_request(time_zone=zone), catalog)
    assert _fields(violations) == ["context.time_zone"]
    assert len(violations[0].description) < 200


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (DecisionRequest("r\x00", "u-1", "cart_abandoned", NOW), "request_id"),
        (DecisionRequest("r-1", "u\x00", "cart_abandoned", NOW), "user_id"),
        (DecisionRequest("r" * 129, "u-1", "cart_abandoned", NOW), "request_id"),
        (DecisionRequest("r-1", "u" * 129, "cart_abandoned", NOW), "user_id"),
        (_request(product_ids=("ok", "s\x00ku")), "context.product_ids[1]"),
        (_request(out_of_stock_product_ids=("x" * 200,)), "context.out_of_stock_product_ids[0]"),
        (_request(page_category="shoes\x00"), "context.page_category"),
        (_request(attributes={"k": "v\x00"}), "context.attributes['k']"),
        (_request(attributes={"k\x00": "v"}), "context.attributes"),
        (_request(attributes={"k": "v" * 257}), "context.attributes['k']"),
    ],
    ids=[
        "nul-request-id",
        "nul-user-id",
        "long-request-id",
        "long-user-id",
        "nul-product",
        "long-oos-product",
        "nul-page",
        "nul-attr-value",
        "nul-attr-key",
        "long-attr-value",
    ],
)
def test_nul_and_over_long_strings_name_their_field(
    catalog: Catalog, request_: DecisionRequest, field: str
) -> None:
    assert _fields(validate_request(request_, catalog)) == [field]


def _event(**changes: object) -> Event:
    base = Event("e-1", "u-1", EventType.ORDER_PLACED, NOW, value=10.0)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_valid_event_has_no_violations() -> None:
    assert validate_event(_event(order_id="o-1", items=(OrderItem("sku", 1, 2.0),))) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"event_id": "e\x00"}, "event_id"),
        ({"user_id": "u\x00"}, "user_id"),
        ({"order_id": "o" * 200}, "order_id"),
        ({"order_id": "o\x00"}, "order_id"),
        ({"decision_id": "d\x00"}, "decision_id"),
        ({"product_ids": ("p\x00",)}, "product_ids[0]"),
        ({"items": (OrderItem("p\x00", 1, 1.0),)}, "items[0].product_id"),
        ({"items": (OrderItem("p" * 129, 1, 1.0),)}, "items[0].product_id"),
        ({"properties": {"k": "v\x00"}}, "properties['k']"),
        ({"properties": {"": "v"}}, "properties['']"),
    ],
    ids=[
        "nul-event-id",
        "nul-user-id",
        "long-order-id",
        "nul-order-id",
        "nul-decision-id",
        "nul-product",
        "nul-item",
        "long-item",
        "nul-property",
        "empty-property-key",
    ],
)
def test_event_strings_the_database_would_refuse_name_their_field(
    changes: dict[str, object], field: str
) -> None:
    assert _fields(validate_event(_event(**changes))) == [field]


def test_many_violations_are_capped_with_a_count_of_the_rest(catalog: Catalog) -> None:
    violations = validate_request(_request(product_ids=("",) * 100), catalog)
    assert len(violations) == 100
    error = InvalidArgumentError(violations)
    assert len(error.violations) == MAX_VIOLATIONS
    assert error.more == 100 - MAX_VIOLATIONS
    assert str(error).endswith("more")
    assert len(str(error)) < 2000


def test_long_fields_and_descriptions_are_cut_short() -> None:
    error = InvalidArgumentError([FieldViolation("f" * 1000, "d" * 5000)])
    (v,) = error.violations
    assert len(v.field) <= 64
    assert len(v.description) <= 120
    assert v.description.endswith("...")
