"""The validate stage: every problem with a request or an event, as field violations.

Everything the database could refuse is refused here, naming the field: a string the store would write
(ids, product ids, attributes, properties) with a NUL character (PostgreSQL's text cannot hold one) or
longer than its column. A value that reached the store would fail the whole group commit it shares with
other callers' decisions."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
MAX_EVENT_PRODUCTS = 1000
MAX_ATTRIBUTES = 50
MAX_TEXT = 256
MAX_KEY = 64
MAX_ZONE = 64
_NUL = "\x00"
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _identifier(name: str, value: str, out: list[FieldViolation]) -> None:
    if not value or not value.strip():
        out.append(FieldViolation(name, "required"))
    else:
        _text(name, value, MAX_ID, out)


def _text(name: str, value: str, limit: int, out: list[FieldViolation]) -> bool:
    """At most ``limit`` characters and no NUL; False (and a violation) otherwise."""
    if len(value) > limit:
        out.append(FieldViolation(name, f"at most {limit} characters, got {len(value)}"))
        return False
    if _NUL in value:
        out.append(FieldViolation(name, "must not contain NUL characters"))
        return False
    return True


def _ids(name: str, values: Sequence[str], limit: int, out: list[FieldViolation]) -> None:
    if not values:
        return
    if len(values) <= limit and all(0 < len(v) <= MAX_ID for v in values) and _NUL not in "".join(values):
        return  # nothing to report: no per-id field names to format
    if len(values) > limit:
        out.append(FieldViolation(name, f"at most {limit} ids, got {len(values)}"))
    for index, value in enumerate(values[:limit]):
        if not value:
            out.append(FieldViolation(f"{name}[{index}]", f"must be 1..{MAX_ID} characters"))
        else:
            _text(f"{name}[{index}]", value, MAX_ID, out)


def _mapping(name: str, values: Mapping[str, str], out: list[FieldViolation]) -> None:
    if not values:
        return
    if len(values) > MAX_ATTRIBUTES:
        out.append(FieldViolation(name, f"at most {MAX_ATTRIBUTES} entries, got {len(values)}"))
    for key, value in list(values.items())[:MAX_ATTRIBUTES]:
        # A key shown only when short and printable: the field name must stay whole in a capped error.
        shown = f"{name}[{key!r}]" if key.isprintable() and len(repr(key)) <= 34 else name
        if not key or len(key) > MAX_KEY or _NUL in key:
            out.append(FieldViolation(shown, f"keys must be 1..{MAX_KEY} characters without NUL"))
        else:
            _text(shown, value, MAX_TEXT, out)


def _time_zone(name: str, value: str, out: list[FieldViolation]) -> None:
    if not _text(name, value, MAX_ZONE, out):
        return
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as 'America'
        out.append(FieldViolation(name, f"unknown IANA time zone {value!r}"))


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
    _ids("context.product_ids", ctx.product_ids, MAX_PRODUCTS, out)
    _ids("context.out_of_stock_product_ids", ctx.out_of_stock_product_ids, MAX_PRODUCTS, out)
    _text("context.page_category", ctx.page_category, MAX_TEXT, out)
    if ctx.time_zone:
        _time_zone("context.time_zone", ctx.time_zone, out)
    _mapping("context.attributes", ctx.attributes, out)
    return out


def validate_event(event: Event) -> list[FieldViolation]:
    out: list[FieldViolation] = list(event.wire_problems)
    _identifier("event_id", event.event_id, out)
    if event.type is not None and event.type.is_inventory:
        if event.user_id:
            _identifier("user_id", event.user_id, out)
        if not event.product_ids:
            out.append(FieldViolation("product_ids", f"required for {event.type.value} events"))
    else:
        _identifier("user_id", event.user_id, out)
    _ids("product_ids", event.product_ids, MAX_EVENT_PRODUCTS, out)
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
    _text("decision_id", event.decision_id, 32, out)
    _text("order_id", event.order_id, MAX_ID, out)
    if len(event.items) > MAX_EVENT_PRODUCTS:
        out.append(FieldViolation("items", f"at most {MAX_EVENT_PRODUCTS} items, got {len(event.items)}"))
    for index, item in enumerate(event.items[:MAX_EVENT_PRODUCTS]):
        if not item.product_id:
            out.append(FieldViolation(f"items[{index}].product_id", "required"))
        else:
            _text(f"items[{index}].product_id", item.product_id, MAX_ID, out)
        if item.quantity <= 0:
            out.append(FieldViolation(f"items[{index}].quantity", "must be > 0"))
        if not (math.isfinite(item.unit_price) and item.unit_price >= 0):
            out.append(FieldViolation(f"items[{index}].unit_price", "must be a finite number >= 0"))
    _mapping("properties", event.properties, out)
    return out
