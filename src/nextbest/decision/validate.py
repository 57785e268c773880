"""The validate stage: every problem with a request or an event, as field violations."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nextbest.catalog import Catalog
from nextbest.domain import DecisionRequest, Event, EventType
from nextbest.errors import FieldViolation

__all__ = ["MAX_ACTIONS", "MAX_EVENTS", "validate_event", "validate_request"]

MAX_ID = 128
MAX_ACTIONS = 10
MAX_EVENTS = 1000
MAX_PRODUCTS = 100
MAX_ATTRIBUTES = 50
MAX_TEXT = 256
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _identifier(name: str, value: str, out: list[FieldViolation]) -> None:
    if not value or not value.strip():
        out.append(FieldViolation(name, "required"))
    elif len(value) > MAX_ID:
        out.append(FieldViolation(name, f"at most {MAX_ID} characters, got {len(value)}"))


def _time(name: str, value: datetime | None, out: list[FieldViolation], *, required: bool) -> None:
    if value is None:
        if required:
            out.append(FieldViolation(name, "required"))
    elif not _EARLIEST <= value < _LATEST:
        out.append(FieldViolation(name, f"{value.isoformat()} is outside 2000-01-01..2100-01-01"))


def validate_request(request: DecisionRequest, catalog: Catalog) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    _identifier("request_id", request.request_id, out)
    _identifier("user_id", request.user_id, out)
    if not request.trigger:
        out.append(FieldViolation("trigger", "required"))
    elif request.trigger not in catalog.triggers:
        known = ", ".join(sorted(catalog.triggers))
        out.append(FieldViolation("trigger", f"unknown trigger {request.trigger[:64]!r}; known: {known}"))
    _time("occurred_at", request.occurred_at, out, required=False)
    seen = set()
    for index, channel in enumerate(request.channels):
        if channel is None:
            out.append(FieldViolation(f"channels[{index}]", "unspecified or unknown channel"))
        elif channel not in catalog.channels:
            out.append(
                FieldViolation(
                    f"channels[{index}]", f"channel {channel.value!r} is not enabled in the catalog"
                )
            )
        elif channel in seen:
            out.append(FieldViolation(f"channels[{index}]", f"channel {channel.value!r} listed twice"))
        seen.add(channel)
    if not 0 <= request.max_actions <= MAX_ACTIONS:
        out.append(FieldViolation("max_actions", f"must be between 0 (meaning 1) and {MAX_ACTIONS}"))
    ctx = request.context
    if ctx.cart_value is not None and not (math.isfinite(ctx.cart_value) and ctx.cart_value >= 0):
        out.append(FieldViolation("context.cart_value", "must be a finite number >= 0"))
    if len(ctx.product_ids) > MAX_PRODUCTS:
        out.append(FieldViolation("context.product_ids", f"at most {MAX_PRODUCTS} product ids"))
    for index, product in enumerate(ctx.product_ids[:MAX_PRODUCTS]):
        if not product or len(product) > MAX_ID:
            out.append(FieldViolation(f"context.product_ids[{index}]", f"must be 1..{MAX_ID} characters"))
    if len(ctx.out_of_stock_product_ids) > MAX_PRODUCTS:
        out.append(FieldViolation("context.out_of_stock_product_ids", f"at most {MAX_PRODUCTS} product ids"))
    for index, product in enumerate(ctx.out_of_stock_product_ids[:MAX_PRODUCTS]):
        if not product or len(product) > MAX_ID:
            out.append(
                FieldViolation(
                    f"context.out_of_stock_product_ids[{index}]", f"must be 1..{MAX_ID} characters"
                )
            )
    if len(ctx.page_category) > MAX_TEXT:
        out.append(FieldViolation("context.page_category", f"at most {MAX_TEXT} characters"))
    if ctx.time_zone:
        try:
            ZoneInfo(ctx.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            out.append(FieldViolation("context.time_zone", f"unknown IANA time zone {ctx.time_zone[:64]!r}"))
    if len(ctx.attributes) > MAX_ATTRIBUTES:
        out.append(FieldViolation("context.attributes", f"at most {MAX_ATTRIBUTES} attributes"))
    for key, value in ctx.attributes.items():
        if not key or len(key) > 64 or len(value) > MAX_TEXT:
            out.append(
                FieldViolation(f"context.attributes[{key[:64]!r}]", f"keys 1..64, values 0..{MAX_TEXT} chars")
            )
    return out


def validate_event(event: Event) -> list[FieldViolation]:
    out: list[FieldViolation] = list(event.wire_problems)
    _identifier("event_id", event.event_id, out)
    if event.type is not None and event.type.is_inventory:
        if event.user_id:
            _identifier("user_id", event.user_id, out)
        if not event.product_ids:
            out.append(FieldViolation("product_ids", f"required for {event.type.value} events"))
        for index, product in enumerate(event.product_ids):
            if not product or len(product) > 128:
                out.append(FieldViolation(f"product_ids[{index}]", "1 to 128 characters"))
    else:
        _identifier("user_id", event.user_id, out)
    if event.type is None:
        out.append(FieldViolation("type", "unspecified or unknown event type"))
    _time("occurred_at", event.occurred_at, out, required=True)
    if not (math.isfinite(event.value) and event.value >= 0):
        out.append(FieldViolation("value", "must be a finite number >= 0"))
    kind = event.type
    if kind in (EventType.CONSENT_CHANGED, EventType.BOUNCED, EventType.COMPLAINED) and event.channel is None:
        out.append(FieldViolation("channel", f"required for {kind.value} events"))
    if kind is EventType.BOUNCED and event.bounce_kind is None:
        out.append(FieldViolation("bounce_kind", "required for bounced events (hard or soft)"))
    if kind is not EventType.BOUNCED and event.bounce_kind is not None:
        out.append(FieldViolation("bounce_kind", "only bounced events carry a bounce kind"))
    if event.value > 0 and kind not in (EventType.ORDER_PLACED, EventType.REFUNDED):
        out.append(FieldViolation("value", "only order_placed and refunded events carry a value"))
    if len(event.decision_id) > 32:
        out.append(FieldViolation("decision_id", "at most 32 characters"))
    for index, item in enumerate(event.items):
        if not item.product_id:
            out.append(FieldViolation(f"items[{index}].product_id", "required"))
        if item.quantity <= 0:
            out.append(FieldViolation(f"items[{index}].quantity", "must be > 0"))
        if not (math.isfinite(item.unit_price) and item.unit_price >= 0):
            out.append(FieldViolation(f"items[{index}].unit_price", "must be a finite number >= 0"))
    if len(event.properties) > MAX_ATTRIBUTES:
        out.append(FieldViolation("properties", f"at most {MAX_ATTRIBUTES} properties"))
    return out
