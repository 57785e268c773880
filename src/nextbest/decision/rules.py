"""The rules stage: each action's CEL rule, and its flow step's condition, compiled once at catalog load.

A rule reads four variables (``customer``, ``context``, ``journey``, ``trigger``), and converting a
Python map to CEL costs microseconds per field, where evaluating a rule costs a fraction of one. So each
trigger plan compiles its rules once more, *flat*: ``context.cart_value`` becomes the top-level variable
``context__cart_value`` (``flat_rule``), and a decision sets only the scalars and lists its rules read
on one ``cel.Context`` per plan and thread, updated field by field (``RuleScope``); ``journey``'s fields
are updated when the candidates move to another flow. A rule that cannot be flattened safely (a
``has()`` macro, escapes or raw strings in a literal, a comprehension variable named like one of the
four) keeps its program and reads whole maps, as before. Whatever the flat program answers but a bool
(an error, another type) is answered again by the original rule on the nested variables, so errors and
their texts are the original's.

A rule that fails to evaluate refuses its action (``RULE_ERROR``) and is logged; it never fails the
decision.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nextbest.catalog import Action, CompiledRule, RuleEvaluationError
from nextbest.catalog.rules import rule_context, sample_scopes
from nextbest.decision.candidates import Refusal
from nextbest.decision.journeys import journey_variables
from nextbest.domain import DecisionRequest, ReasonCode, RequestContext
from nextbest.state import CustomerState, Journey

__all__ = ["FlatRule", "RuleScope", "ScopePlan", "check_rules", "customer_variables", "flat_rule"]

logger = logging.getLogger(__name__)


def _days(now: datetime, then: datetime | None) -> float:
    return (now - then).total_seconds() / 86400 if then is not None else -1.0


_CUSTOMER: dict[str, Callable[[CustomerState, datetime], Any]] = {
    "orders_count": lambda state, now: state.orders_count,
    "refunds_count": lambda state, now: state.refunds_count,
    "total_revenue": lambda state, now: float(state.revenue_total),
    "days_since_last_order": lambda state, now: _days(now, state.last_order_at),
    "days_since_first_seen": lambda state, now: max(_days(now, state.first_seen_at), 0.0),
    "days_since_last_engagement": lambda state, now: _days(now, state.last_engagement_at),
    "consents": lambda state, now: [ch.value for ch, s in state.channels.items() if s.consent],
    "subscribed": lambda state, now: any(s.consent for s in state.channels.values()),
}
_CONTEXT: dict[str, Callable[[RequestContext], Any]] = {
    "cart_value": lambda ctx: float(ctx.cart_value or 0.0),
    "has_cart_value": lambda ctx: ctx.cart_value is not None,
    "product_ids": lambda ctx: list(ctx.product_ids),
    "page_category": lambda ctx: ctx.page_category,
    "time_zone": lambda ctx: ctx.time_zone,
    "attributes": lambda ctx: dict(ctx.attributes),
}
# Flat variables derived from a field: ``size(context.product_ids)`` is read as the int
# ``context__product_ids__size`` (``flatten``). Converting a list of strings to CEL costs ~5 µs on every
# request (its ids change each time), its length ~0.2 µs, and a rule that only counts the products needs no
# more. Named with the separator twice, so no field of ``context`` can be taken for it.
_DERIVED: dict[str, Callable[[RequestContext], Any]] = {"product_ids__size": lambda ctx: len(ctx.product_ids)}
_FLAT_CONTEXT = {**_CONTEXT, **_DERIVED}
_ALL = {"customer": None, "context": None, "trigger": None}
# The separator of a flat variable's name: ``context.cart_value`` is read as ``context__cart_value``.
_SEP = "__"


def _fields(builders: Mapping[str, Callable[..., Any]], wanted: frozenset[str] | None) -> list[str]:
    return list(builders) if wanted is None else [f for f in builders if f in wanted]


def customer_variables(
    state: CustomerState, now: datetime, fields: frozenset[str] | None = None
) -> dict[str, Any]:
    """What CEL sees as ``customer`` (the fields named, or all): rules, and segments over stored
    customers."""
    return {f: _CUSTOMER[f](state, now) for f in _fields(_CUSTOMER, fields)}


# ``name.field`` for the three map variables, not after another name or a dot (``x.context.a``) and not
# a method call on the map (``context.size()``).
_SELECT = re.compile(r"(?<![\w.])(customer|context|journey)\s*\.\s*([A-Za-z_]\w*)\b(?!\s*\()")
# What makes a source unsafe to rewrite textually: the ``has()`` macro needs a field selection; an escape,
# a raw or bytes prefix or a triple quote makes string literals harder to find than by their quotes; a
# comprehension may bind a variable named like one of the maps.
_UNSAFE = re.compile(
    r"\bhas\s*\(|\\|(?<![\w.])[rRbB]{1,2}['\"]|'''|\"\"\"|\b(?:customer|context|journey)\s*,"
)
_STRING = re.compile(r"\"[^\"\n]*\"|'[^'\n]*'")
# ``size(context.product_ids)`` and ``context.product_ids.size()``: the derived int variable instead.
_SIZE = re.compile(
    r"(?<![\w.])size\s*\(\s*context\s*\.\s*product_ids\s*\)"
    r"|(?<![\w.])context\s*\.\s*product_ids\s*\.\s*size\s*\(\s*\)"
)
_PRODUCTS_SIZE = f"context{_SEP}product_ids{_SEP}size"


def flatten(source: str) -> str | None:
    """``source`` with each ``customer.f``, ``context.f`` and ``journey.f`` outside string literals
    read as the variable ``customer__f`` (and so on), and the size of ``context.product_ids`` as
    ``context__product_ids__size``, or None when it has nothing to rewrite or cannot be rewritten
    safely."""
    if _UNSAFE.search(source):
        return None
    out: list[str] = []
    at = 0
    changed = False
    for literal in _STRING.finditer(source):
        code = source[at : literal.start()]
        if "'" in code or '"' in code:  # an unterminated quote: not a source this reads safely
            return None
        rewritten = _SELECT.sub(rf"\1{_SEP}\2", _SIZE.sub(_PRODUCTS_SIZE, code))
        changed = changed or rewritten != code
        out += [rewritten, literal.group()]
        at = literal.end()
    code = source[at:]
    if "'" in code or '"' in code:
        return None
    rewritten = _SELECT.sub(rf"\1{_SEP}\2", _SIZE.sub(_PRODUCTS_SIZE, code))
    changed = changed or rewritten != code
    out.append(rewritten)
    return "".join(out) if changed else None


def _flat_scope(scope: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The variables ``names`` of a flat program, taken from a nested ``scope``."""
    out: dict[str, Any] = {}
    for name in names:
        head, sep, field = name.partition(_SEP)
        if name == _PRODUCTS_SIZE:
            out[name] = len(scope["context"]["product_ids"])
        else:
            out[name] = scope[head][field] if sep else scope[name]
    return out


@dataclass(frozen=True, slots=True)
class FlatRule:
    """A rule as a decision evaluates it: ``program`` reads the top-level ``variables`` (flat names such
    as ``context__cart_value``, or whole maps); ``rule`` is the catalog's, for errors."""

    rule: CompiledRule
    program: Any  # cel.Program
    variables: frozenset[str]
    uses_journey: bool = field(init=False)
    # An action's refusal when this, its rule, is false: the same sentence every time.
    if_false: Refusal = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "uses_journey", self.rule.uses_journey)
        object.__setattr__(
            self, "if_false", Refusal(ReasonCode.RULE_FALSE, f"rule is false: {self.rule.source}")
        )


def flat_rule(rule: CompiledRule) -> FlatRule:
    """The flat form of ``rule``, checked on the catalog's sample scopes against the original (same
    answers); the original program when it cannot be flattened or answers differently."""
    import cel  # here, not at the top: ``nextbest.catalog.rules`` must be imported first (cel.cli)

    original = FlatRule(rule, rule.program, frozenset(rule.program.variables()))
    source = flatten(rule.source)
    if source is None:
        return original
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError):
        return original
    flat = FlatRule(rule, program, frozenset(program.variables()))
    for scope in sample_scopes():
        try:
            theirs: Any = rule.program.execute(dict(scope))
        except Exception as exc:  # any failure: compared by type below
            theirs = type(exc)
        try:
            ours: Any = program.execute(_flat_scope(scope, flat.variables))
        except Exception as exc:
            ours = type(exc)
        if type(theirs) is not type(ours) or theirs != ours:
            return original
    return flat


@dataclass(frozen=True, slots=True)
class ScopePlan:
    """What the rules of a trigger plan read, worked out once: the flat variables per map (name,
    field), the maps read whole, and a ``cel.Context`` per thread to update."""

    customer: tuple[tuple[str, str], ...]  # (variable, field) read flat
    context: tuple[tuple[str, str], ...]
    journey: tuple[tuple[str, str], ...]
    whole: frozenset[str]  # variables read whole: customer, context, journey, trigger
    # What the original programs read (``rule_reads``), for the nested variables of the error path.
    reads: Mapping[str, frozenset[str] | None]
    contexts: threading.local

    @classmethod
    def of(cls, rules: Iterable[FlatRule], reads: Mapping[str, frozenset[str] | None]) -> ScopePlan:
        names = frozenset(v for r in rules for v in r.variables)
        flat: dict[str, list[tuple[str, str]]] = {"customer": [], "context": [], "journey": []}
        for name in sorted(names):
            head, sep, field = name.partition(_SEP)
            if sep:
                flat[head].append((name, field))
        whole = frozenset(n for n in names if _SEP not in n)
        return cls(
            tuple(flat["customer"]),
            tuple(flat["context"]),
            tuple(flat["journey"]),
            whole,
            reads,
            threading.local(),
        )

    def live(self) -> _Live:
        """This thread's context of the plan."""
        live: _Live | None = getattr(self.contexts, "live", None)
        if live is None:
            live = self.contexts.live = _Live()
        return live


_UNSET = object()
_TRIGGER_ONLY = frozenset({"trigger"})


def _same(held: Any, value: Any) -> bool:
    """Whether ``value`` is what the context holds already: the same type and value (a float's sign
    too), or the same object. Maps are always set again (their values are not checked here)."""
    if held is value:
        return True
    if type(held) is not type(value) or isinstance(value, dict) or held != value:
        return False
    return (
        not isinstance(value, float) or value != 0.0 or math.copysign(1.0, held) == math.copysign(1.0, value)
    )


class _Live:
    """A plan's ``cel.Context`` in one thread and the values it holds. Setting a variable converts it to
    CEL (~10k instructions each), so only the ones that changed since the thread's last decision are
    set: field by field."""

    __slots__ = ("context", "held")

    def __init__(self) -> None:
        self.context: Any = rule_context({})
        self.held: dict[str, Any] = {}

    def set(self, values: Mapping[str, Any]) -> None:
        held = self.held
        changed = {}
        for k, v in values.items():
            was = held.get(k, _UNSET)
            if was is not v and not _same(was, v):
                changed[k] = v
        if not changed:
            return
        try:
            self.context.update(changed)
        except BaseException:
            # Partly updated, maybe: what it holds is no longer known, so start again next time.
            self.context, self.held = rule_context({}), {}
            raise
        held.update(changed)


class RuleScope:
    """The variables of one decision's rules on the plan's ``cel.Context`` for this thread (``_Live``):
    set on first use, ``journey``'s again when the candidates move to another flow. The nested variables
    (``_nested``) are built only when a flat program fails and the original must answer. One decision at
    a time per thread: a scope's variables stay in the context until the thread's next decision."""

    def __init__(
        self,
        state: CustomerState,
        request: DecisionRequest,
        now: datetime,
        plan: ScopePlan,
    ) -> None:
        self._plan = plan
        self._request = request
        self._now = now
        self._state = state
        self._live: _Live | None = None
        self._journey_of: str | None = None

    def context(self, flow: str, journey: Journey, uses_journey: bool) -> Any:
        """The plan's context for this thread, holding this decision's variables (``journey``'s only
        for rules that read it)."""
        plan = self._plan
        live = self._live
        if live is None:
            live = self._live = plan.live()
            state, now, ctx = self._state, self._now, self._request.context
            values: dict[str, Any] = {name: _CUSTOMER[f](state, now) for name, f in plan.customer}
            for name, f in plan.context:
                values[name] = _FLAT_CONTEXT[f](ctx)
            if plan.whole:
                if plan.whole == _TRIGGER_ONLY and "trigger" in plan.reads:  # no map to build
                    values["trigger"] = self._request.trigger
                else:
                    values.update(self._nested(plan.whole))
            live.set(values)
        if uses_journey and self._journey_of != flow:
            variables = journey_variables(journey, self._state.last_events, self._now)
            values = {name: variables[f] for name, f in plan.journey}
            if "journey" in plan.whole:
                values["journey"] = variables
            live.set(values)
            self._journey_of = flow
        return live.context

    def _nested(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """The rules' variables as maps (what the catalog's own programs read), but ``journey``: those
        in ``names``, or all."""
        reads, state, now, ctx = self._plan.reads, self._state, self._now, self._request.context
        if names is not None:
            reads = {name: reads[name] for name in names if name in reads}
        variables: dict[str, Any] = {}
        if "customer" in reads:
            variables["customer"] = customer_variables(state, now, reads["customer"])
        if "context" in reads:
            variables["context"] = {f: _CONTEXT[f](ctx) for f in _fields(_CONTEXT, reads["context"])}
        if "trigger" in reads:
            variables["trigger"] = self._request.trigger
        return variables

    def original(self, flow: str, journey: Journey) -> Any:
        """A context of the nested variables, for the catalog's own program (the error path)."""
        variables = self._nested()
        variables["journey"] = journey_variables(journey, self._state.last_events, self._now)
        return rule_context(variables)


def _passes(rule: FlatRule, flow: str, journey: Journey, scope: RuleScope) -> bool:
    """The flat program's answer; the original rule's when the flat one gives no bool (its error)."""
    try:
        result = rule.program.execute(scope.context(flow, journey, rule.uses_journey))
    except Exception:  # whatever it is, the original program says what it means (and its text)
        result = None
    if isinstance(result, bool):
        return result
    return rule.rule.evaluate(scope.original(flow, journey))


def check_rules(
    action: Action,
    journey: Journey,
    scope: RuleScope,
    *,
    flow: str,
    when: FlatRule | None,
    rule: FlatRule | None,
) -> Refusal | None:
    """The step condition, then the action's rule (None when ``true``): the first that is false or
    fails, or None."""
    if when is None and rule is not None:  # most actions: a rule and no step condition
        try:
            result = rule.program.execute(scope.context(flow, journey, rule.uses_journey))
        except Exception:  # the original program answers below, with its error's text
            result = None
        if result is True:
            return None
        if result is False and rule.rule is action.rule:
            return rule.if_false
    try:
        if when is not None and not _passes(when, flow, journey, scope):
            return Refusal(ReasonCode.RULE_FALSE, f"step condition is false: {when.rule.source}")
        passed = rule is None or _passes(rule, flow, journey, scope)
    except RuleEvaluationError as exc:
        # The error's text can quote the caller's context values: it goes to the caller (explain), not
        # to the log.
        logger.warning("rule of %s failed to evaluate (%s)", action.id, type(exc).__name__)
        return Refusal(ReasonCode.RULE_ERROR, f"rule {action.rule.source!r} failed: {exc}")
    if not passed:
        return Refusal(ReasonCode.RULE_FALSE, f"rule is false: {action.rule.source}")
    return None
