"""The golden corpus's format: what one recorded operation holds, and how the pipeline's answers are
turned into it and compared with it.

The corpus (``corpus.jsonl.gz``) is JSON lines, gzip'd. The first line describes the corpus (``kind:
"corpus"``: the commit it was made at, the catalogs' versions, the model versions, the segments); then each
segment starts with a ``kind: "segment"`` line (a fresh store) followed by its operations, in the order
they were made:

- ``{"kind": "events", "clock": ..., "events": [...], "results": [...]}`` — one ``RecordEvents`` call,
  made when the engine's clock read ``clock``, with one result per event (outcome, violations, the
  pending actions it cancelled);
- ``{"kind": "decide", "clock": ..., "request": {...}, "decision": {...}}`` — one ``NextAction`` call and
  the decision made (with ``explain`` details when the request asked for them), or ``"error": {...}``
  when the engine refused it.

Decision ids are random (UUIDv7); everything else is a function of the operations before it. So a
replay maps each recorded decision id to the one the replay made, in both directions: events that
name a decision (opened, clicked) are sent with the replay's id, and a replayed answer is written with
the recorded ids before it is compared. Row ids a store assigns (``Cancellation.exposure_id``) are
left out: they number rows, not behaviour, and differ between a fresh SQLite file and a shared
PostgreSQL database.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import math
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from nextbest.domain import (
    ActionClass,
    BounceKind,
    Cancellation,
    Channel,
    ChosenAction,
    Decision,
    DecisionRequest,
    Event,
    EventResult,
    EventType,
    ExperimentExposure,
    OrderItem,
    Rejection,
    RequestContext,
)
from nextbest.errors import FieldViolation, InvalidArgumentError, NextbestError

__all__ = [
    "FORMAT",
    "Corpus",
    "IdMap",
    "Segment",
    "customer_sample",
    "decision_json",
    "differences",
    "error_json",
    "event_from_json",
    "event_json",
    "event_result_json",
    "features_from_json",
    "map_text",
    "read_corpus",
    "request_from_json",
    "request_json",
    "write_corpus",
]

FORMAT = 1
# Scores, features, buckets and probabilities are compared to this (absolute, or relative above 1).
TOLERANCE = 1e-9

Json = dict[str, Any]

# A decision id inside a text (a preemption's reason, an error message): a UUID as 32 hex digits, or with
# dashes, so that a change of format is still mapped.
_DECISION_ID = re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b")


def map_text(text: str, decision_ids: Mapping[str, str]) -> str:
    """``text`` with the decision ids it names mapped through ``decision_ids``."""
    if not decision_ids or not _DECISION_ID.search(text):
        return text
    return _DECISION_ID.sub(lambda m: decision_ids.get(m.group(0), m.group(0)), text)


def when(at: datetime | None) -> str | None:
    """An instant as UTC ISO 8601: a pipeline that returns the same instant in another zone is equal."""
    return None if at is None else at.astimezone(UTC).isoformat()


def instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# -- what goes in ----------------------------------------------------------------------------------------


def request_json(r: DecisionRequest) -> Json:
    ctx = r.context
    out: Json = {
        "request_id": r.request_id,
        "user_id": r.user_id,
        "trigger": r.trigger,
        "occurred_at": when(r.occurred_at),
        "channels": [None if c is None else c.value for c in r.channels],
        "max_actions": r.max_actions,
        "explain": r.explain,
    }
    context: Json = {}
    if ctx.cart_value is not None:
        context["cart_value"] = ctx.cart_value
    for name in ("product_ids", "out_of_stock_product_ids"):
        if getattr(ctx, name):
            context[name] = list(getattr(ctx, name))
    for name in ("page_category", "time_zone"):
        if getattr(ctx, name):
            context[name] = getattr(ctx, name)
    if ctx.attributes:
        context["attributes"] = dict(ctx.attributes)
    if context:
        out["context"] = context
    return out


def request_from_json(d: Json) -> DecisionRequest:
    ctx = d.get("context", {})
    return DecisionRequest(
        request_id=d["request_id"],
        user_id=d["user_id"],
        trigger=d["trigger"],
        occurred_at=instant(d["occurred_at"]),
        context=RequestContext(
            cart_value=ctx.get("cart_value"),
            product_ids=tuple(ctx.get("product_ids", ())),
            page_category=ctx.get("page_category", ""),
            time_zone=ctx.get("time_zone", ""),
            attributes=dict(ctx.get("attributes", {})),
            out_of_stock_product_ids=tuple(ctx.get("out_of_stock_product_ids", ())),
        ),
        channels=tuple(None if c is None else Channel(c) for c in d["channels"]),
        max_actions=d["max_actions"],
        explain=d["explain"],
    )


def event_json(e: Event, decision_ids: Mapping[str, str] | None = None) -> Json:
    out: Json = {
        "event_id": e.event_id,
        "user_id": e.user_id,
        "type": None if e.type is None else e.type.value,
        "occurred_at": when(e.occurred_at),
    }
    if e.value:
        out["value"] = e.value
    if e.channel is not None:
        out["channel"] = e.channel.value
    if e.consent_granted:
        out["consent_granted"] = True
    if e.bounce_kind is not None:
        out["bounce_kind"] = e.bounce_kind.value
    if e.decision_id:
        out["decision_id"] = (decision_ids or {}).get(e.decision_id, e.decision_id)
    if e.order_id:
        out["order_id"] = e.order_id
    if e.product_ids:
        out["product_ids"] = list(e.product_ids)
    if e.items:
        out["items"] = [[i.product_id, i.quantity, i.unit_price] for i in e.items]
    if e.properties:
        out["properties"] = dict(e.properties)
    return out


def event_from_json(d: Json, decision_ids: Mapping[str, str]) -> Event:
    """The event, naming the replay's decision where it names a recorded one."""
    decision_id = d.get("decision_id", "")
    return Event(
        event_id=d["event_id"],
        user_id=d["user_id"],
        type=None if d["type"] is None else EventType(d["type"]),
        occurred_at=instant(d["occurred_at"]),
        value=d.get("value", 0.0),
        channel=Channel(d["channel"]) if "channel" in d else None,
        consent_granted=d.get("consent_granted", False),
        bounce_kind=BounceKind(d["bounce_kind"]) if "bounce_kind" in d else None,
        decision_id=decision_ids.get(decision_id, decision_id),
        product_ids=tuple(d.get("product_ids", ())),
        items=tuple(OrderItem(p, q, u) for p, q, u in d.get("items", ())),
        order_id=d.get("order_id", ""),
        properties=dict(d.get("properties", {})),
    )


# -- what comes out --------------------------------------------------------------------------------------


def _features(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def features_from_json(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 8}d", raw))


def action_json(a: ChosenAction) -> Json:
    out: Json = {
        "action_id": a.action_id,
        "flow": a.flow,
        "channel": a.channel.value,
        "action_class": a.action_class.value,
        "send_at": when(a.send_at),
        "parameters": dict(a.parameters),
        "score": a.score,
        "send_time": a.send_time.value,
    }
    if a.features:
        out["features"] = _features(a.features)
    return out


REJECTION_FIELDS = ("action_id", "flow", "channel", "action_class", "reason", "detail")


def rejection_json(r: Rejection) -> list[str]:
    # A list, not an object: a decision has a dozen of them and the keys would be most of the corpus.
    return [r.action_id, r.flow, r.channel.value, r.action_class.value, r.reason.value, r.detail]


def exposure_json(e: ExperimentExposure) -> Json:
    return {
        "experiment_id": e.experiment_id,
        "arm_id": e.arm_id,
        "bucket": e.bucket,
        "hash_version": e.hash_version,
        "seed": e.seed,
        "probability": e.probability,
        "held_out": e.held_out,
        "action": action_json(e.action),
    }


def cancellation_json(c: Cancellation, decision_ids: Mapping[str, str]) -> Json:
    return {
        "decision_id": decision_ids.get(c.decision_id, c.decision_id),
        "action_id": c.action_id,
        "flow": c.flow,
        "channel": c.channel.value,
        "action_class": ActionClass(c.action_class).value,
        "send_at": when(c.send_at),
        "reason": map_text(c.reason, decision_ids),
    }


def decision_json(d: Decision, decision_ids: Mapping[str, str] | None = None) -> Json:
    """The decision as the corpus holds it; ``decision_ids`` (replayed id -> recorded id) writes the
    recorded ids in place of the replay's."""
    ids = decision_ids or {}
    return {
        "decision_id": ids.get(d.decision_id, d.decision_id),
        "request_id": d.request_id,
        "user_id": d.user_id,
        "trigger": d.trigger,
        "occurred_at": when(d.occurred_at),
        "catalog_version": d.catalog_version,
        "replayed": d.replayed,
        "models": dict(sorted(d.models.items())),
        "actions": [action_json(a) for a in d.actions],
        "rejected": [rejection_json(r) for r in d.rejected],
        "exposures": [exposure_json(e) for e in d.exposures],
        "cancelled": [cancellation_json(c, ids) for c in d.cancelled],
    }


def _violations(violations: tuple[FieldViolation, ...] | list[FieldViolation]) -> list[list[str]]:
    return [[v.field, v.description] for v in violations]


def event_result_json(r: EventResult, decision_ids: Mapping[str, str] | None = None) -> Json | str:
    """The outcome alone when the event was simply accepted or a duplicate (most of them), else the
    outcome with the violations and cancellations. Its ``index`` and ``event_id`` are its position and
    its event's (the replay checks them separately)."""
    if not r.violations and not r.cancelled:
        return r.outcome.value
    out: Json = {"outcome": r.outcome.value}
    if r.violations:
        out["violations"] = _violations(r.violations)
    if r.cancelled:
        out["cancelled"] = [cancellation_json(c, decision_ids or {}) for c in r.cancelled]
    return out


def error_json(exc: NextbestError, decision_ids: Mapping[str, str] | None = None) -> Json:
    out: Json = {"type": type(exc).__name__, "message": map_text(str(exc), decision_ids or {})}
    if isinstance(exc, InvalidArgumentError):
        out["violations"] = _violations(exc.violations)
    return out


# -- the file --------------------------------------------------------------------------------------------


@dataclass
class Segment:
    """Operations replayed in order against one fresh store."""

    header: Json
    operations: list[Json] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.header["name"])


@dataclass
class Corpus:
    header: Json
    segments: list[Segment]

    def operations(self) -> Iterator[tuple[Segment, int, Json]]:
        for segment in self.segments:
            for index, op in enumerate(segment.operations):
                yield segment, index, op


def write_corpus(path: Path, corpus: Corpus) -> int:
    """Writes the corpus deterministically (mtime 0, sorted keys); returns its size in bytes."""
    lines = [corpus.header]
    for segment in corpus.segments:
        lines.append(segment.header)
        lines.extend(segment.operations)
    text = "".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines)
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz,
    ):
        gz.write(text.encode())
    return path.stat().st_size


def read_corpus(path: Path, lines: int | None = None) -> Corpus:
    """The corpus at ``path``, or only its first ``lines`` lines (a quick look)."""
    with gzip.open(path, "rb") as f:
        parsed = [orjson.loads(line) for line in itertools.islice(f, lines)]
    header, rest = parsed[0], parsed[1:]
    if header.get("kind") != "corpus" or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a golden corpus of format {FORMAT}")
    segments: list[Segment] = []
    for line in rest:
        if line["kind"] == "segment":
            segments.append(Segment(line))
        else:
            segments[-1].operations.append(line)
    return Corpus(header, segments)


# -- comparing -------------------------------------------------------------------------------------------


class IdMap:
    """Recorded decision ids <-> the replay's, learned as the replay decides."""

    def __init__(self) -> None:
        self.to_replayed: dict[str, str] = {}
        self.to_recorded: dict[str, str] = {}

    def learn(self, recorded: str, replayed: str) -> None:
        self.to_replayed[recorded] = replayed
        self.to_recorded[replayed] = recorded


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))


def _list_differences(expected: list[Any], got: list[Any], path: str) -> list[str]:
    if len(expected) == len(got):
        out = []
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            out += differences(e, g, f"{path}[{i}]")
        if out and _sorted(expected) == _sorted(got):
            return [f"{path}: the same {len(got)} items in another order: expected {expected!r}, got {got!r}"]
        return out
    missing = [e for e in expected if not any(not differences(e, g) for g in got)]
    extra = [g for g in got if not any(not differences(e, g) for e in expected)]
    return [
        f"{path}: expected {len(expected)} items, got {len(got)}; missing {missing!r}; not expected {extra!r}"
    ]


def _sorted(items: list[Any]) -> list[str]:
    return sorted(json.dumps(i, sort_keys=True) for i in items)


def _named(rejections: list[Any]) -> list[Any]:
    """Rejections as objects, so that a difference names its field."""
    return [
        dict(zip(REJECTION_FIELDS, r, strict=True)) if isinstance(r, list) and len(r) == 6 else r
        for r in rejections
    ]


def differences(expected: Any, got: Any, path: str = "") -> list[str]:
    """Every place ``got`` differs from ``expected`` (JSON values), as ``path: expected != got`` lines;
    floats (and features, decoded) are compared to ``TOLERANCE``."""
    if expected == got and type(expected) is type(got):  # the common case, at C speed
        return []
    if isinstance(expected, dict) and isinstance(got, dict):
        out = []
        for key in sorted(expected.keys() | got.keys()):
            sub = f"{path}.{key}" if path else key
            if key not in got:
                out.append(f"{sub}: expected {expected[key]!r}, missing")
            elif key not in expected:
                out.append(f"{sub}: not expected, got {got[key]!r}")
            elif key == "features" and isinstance(expected[key], str) and isinstance(got[key], str):
                out += differences(features_from_json(expected[key]), features_from_json(got[key]), sub)
            elif key == "rejected" and isinstance(expected[key], list) and isinstance(got[key], list):
                out += differences(_named(expected[key]), _named(got[key]), sub)
            else:
                out += differences(expected[key], got[key], sub)
        return out
    if isinstance(expected, list) and isinstance(got, list):
        return _list_differences(expected, got, path)
    numbers = (int, float)
    if (
        isinstance(expected, numbers)
        and isinstance(got, numbers)
        and not isinstance(expected, bool)
        and not isinstance(got, bool)
        and (isinstance(expected, float) or isinstance(got, float))
    ):
        return [] if _close(float(expected), float(got)) else [f"{path}: expected {expected!r}, got {got!r}"]
    if type(expected) is not type(got) or expected != got:
        return [f"{path}: expected {expected!r}, got {got!r}"]
    return []


def customer_sample(segment: Segment, every: int) -> Segment:
    """The operations of about one customer in ``every`` (chosen by a hash of the id), whole: every
    decision and event of theirs, in order, with the inventory events of everyone. Customers share
    nothing else in a store, so their answers are the corpus's."""

    def kept(user_id: str) -> bool:
        return not user_id or zlib.crc32(user_id.encode()) % every == 0

    operations: list[Json] = []
    for op in segment.operations:
        if op["kind"] == "decide":
            if kept(op["request"]["user_id"]):
                operations.append(op)
            continue
        pairs = [(e, r) for e, r in zip(op["events"], op["results"], strict=True) if kept(e["user_id"])]
        if pairs:
            operations.append({**op, "events": [e for e, _ in pairs], "results": [r for _, r in pairs]})
    return Segment(segment.header, operations)
