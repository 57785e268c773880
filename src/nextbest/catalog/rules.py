"""CEL eligibility rules: compiled once at catalog load, evaluated per candidate.

Rules see four variables, documented in the README: ``customer``, ``context``, ``journey`` and ``trigger``.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any


class _DeferredCli(ModuleType):
    """common-expression-language's package ``__init__`` imports its interactive command line
    (prompt_toolkit, rich): 0.3 s of every nextbest start and command, for a module nextbest never uses.
    This placeholder stands in for ``cel.cli`` until something reads from it, which imports the real one."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


if "cel" not in sys.modules:
    sys.modules.setdefault("cel.cli", _DeferredCli("cel.cli"))

import cel  # noqa: E402  (after the placeholder above)

__all__ = [
    "RULE_VARIABLES",
    "SCORE_FIELDS",
    "SEGMENT_VARIABLES",
    "CompiledRule",
    "RuleEvaluationError",
    "compile_rule",
    "compile_segment",
    "merge_reads",
    "rule_context",
    "rule_reads",
    "sample_scopes",
    "score_reads",
]


def rule_context(variables: Mapping[str, Any]) -> Any:
    """A ``cel.Context`` holding ``variables`` (converted to CEL once), for many rule evaluations."""
    return cel.Context(dict(variables))


RULE_VARIABLES = ("customer", "context", "journey", "trigger")


class RuleEvaluationError(Exception):
    """The rule could not be evaluated for this customer (missing key, type mismatch)."""


# What a rule reads of each variable: the fields it names (``context.cart_value``), or None for the whole
# variable (used bare, indexed, or in a way the pattern does not recognise). Over-approximate by design.
Reads = Mapping[str, frozenset[str] | None]

_REFERENCE = re.compile(r"(?<![\w.])(customer|context|journey|trigger)\b(?:\s*\.\s*([A-Za-z_]\w*))?")


def rule_reads(source: str) -> dict[str, frozenset[str] | None]:
    """The variables and fields ``source`` can read, for building only those per decision: converting
    a value to CEL costs microseconds per field, evaluating a rule a fraction of one. Any use of a
    variable other than ``name.field`` (bare, ``name["field"]``, a field name the pattern cannot read)
    counts as reading all of it, and text inside string literals counts too: the result can only be
    too large, never too small."""
    reads: dict[str, set[str] | None] = {}
    for match in _REFERENCE.finditer(source):
        name, field_name = match.group(1), match.group(2)
        if name == "trigger" or field_name is None:
            reads[name] = None
        elif name not in reads or reads[name] is not None:
            known = reads.setdefault(name, set())
            assert known is not None
            known.add(field_name)
    return {name: (frozenset(f) if f is not None else None) for name, f in reads.items()}


def merge_reads(many: Iterable[Reads]) -> dict[str, frozenset[str] | None]:
    """What a set of rules reads together."""
    out: dict[str, frozenset[str] | None] = {}
    for reads in many:
        for name, fields in reads.items():
            known = out.get(name, frozenset())
            out[name] = None if fields is None or known is None else known | fields
    return out


@dataclass(frozen=True, slots=True)
class CompiledRule:
    source: str
    program: Any  # cel.Program; the extension module ships no usable type for it
    uses_journey: bool = False
    # What the rule reads (``rule_reads``); decided once at compile time.
    reads: Reads = field(init=False, repr=False, compare=False)
    # Decided once at compile time: evaluated for every candidate of every decision.
    always_true: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "always_true", self.source.strip() == "true")
        object.__setattr__(self, "reads", {} if self.always_true else rule_reads(self.source))

    def evaluate(self, scope: Any) -> bool:
        """Evaluates against a ``cel.Context`` (built once per decision) or a plain mapping."""
        if self.always_true:
            return True
        try:
            result = self.program.execute(scope)
        except (KeyError, TypeError, ValueError, RuntimeError, ArithmeticError) as exc:
            raise RuleEvaluationError(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(result, bool):
            raise RuleEvaluationError(f"rule returned {type(result).__name__}, not bool")
        return result


def sample_scopes() -> list[dict[str, Any]]:
    """Representative variable sets used to dry-run every rule at load, so a typo in a field name or a
    type error is a catalog error instead of a surprise in production."""
    empty: dict[str, Any] = {
        "customer": {
            "orders_count": 0,
            "refunds_count": 0,
            "total_revenue": 0.0,
            "days_since_last_order": -1.0,
            "days_since_first_seen": 0.0,
            "days_since_last_engagement": -1.0,
            "consents": [],
            "subscribed": False,
            "churn_risk": 0.0,
            "purchase_propensity": 0.0,
        },
        "context": {
            "cart_value": 0.0,
            "has_cart_value": False,
            "product_ids": [],
            "page_category": "",
            "time_zone": "",
            "attributes": {},
        },
        "journey": {
            "active": False,
            "hours_since_entry": -1.0,
            "steps_sent": 0,
            "opened": False,
            "clicked": False,
        },
        "trigger": "scheduled",
    }
    full: dict[str, Any] = {
        "customer": {
            "orders_count": 7,
            "refunds_count": 1,
            "total_revenue": 812.5,
            "days_since_last_order": 12.0,
            "days_since_first_seen": 400.0,
            "days_since_last_engagement": 3.0,
            "consents": ["email", "sms", "push"],
            "subscribed": True,
            "churn_risk": 0.72,
            "purchase_propensity": 0.15,
        },
        "context": {
            "cart_value": 120.0,
            "has_cart_value": True,
            "product_ids": ["sku-1", "sku-2"],
            "page_category": "shoes",
            "time_zone": "Europe/Paris",
            "attributes": {},
        },
        "journey": {
            "active": True,
            "hours_since_entry": 30.0,
            "steps_sent": 1,
            "opened": True,
            "clicked": False,
        },
        "trigger": "cart_abandoned",
    }
    return [empty, full]


# Predicted customer scores (``nextbest.models.churn``): stored per customer by ``nextbest score``, read by
# segments over the store. A decision does not read them (yet), so an action rule may not.
SCORE_FIELDS = ("churn_risk", "purchase_propensity")


def score_reads(reads: Reads) -> frozenset[str]:
    """The predicted scores a rule or segment reads (all of them when it reads ``customer`` whole)."""
    if "customer" not in reads:
        return frozenset()
    fields = reads["customer"]
    return frozenset(SCORE_FIELDS) if fields is None else fields & frozenset(SCORE_FIELDS)


def compile_rule(source: str) -> tuple[CompiledRule | None, list[str]]:
    """Compiles ``source``; returns the rule and the problems found (empty when it is usable)."""
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        return None, [f"CEL syntax error: {_first_line(exc)}"]
    scores = sorted(f for f in rule_reads(source).get("customer") or () if f in SCORE_FIELDS)
    if scores:
        names = ", ".join(f"customer.{f}" for f in scores)
        return None, [
            f"{names}: predicted scores are read by segments (and so campaign audiences), not by action "
            "rules; put the condition in a segment"
        ]
    rule = CompiledRule(source=source, program=program, uses_journey="journey" in program.variables())
    problems: list[str] = []
    for scope in sample_scopes():
        problem = _dry_run(rule, scope)
        if problem and problem not in problems:
            problems.append(problem)
    return (rule if not problems else None), problems


SEGMENT_VARIABLES = ("customer",)


def compile_segment(source: str) -> tuple[CompiledRule | None, list[str]]:
    """Compiles a segment's condition: like a rule, but it sees only ``customer`` (a segment is
    evaluated over stored customers, with no request, trigger or journey)."""
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        return None, [f"CEL syntax error: {_first_line(exc)}"]
    other = sorted(set(program.variables()) & (set(RULE_VARIABLES) - set(SEGMENT_VARIABLES)))
    if other:
        return None, [f"a segment reads only customer, not {', '.join(other)}"]
    rule = CompiledRule(source=source, program=program)
    problems: list[str] = []
    for scope in sample_scopes():
        problem = _dry_run(rule, {"customer": scope["customer"]}, SEGMENT_VARIABLES)
        if problem and problem not in problems:
            problems.append(problem)
    return (rule if not problems else None), problems


def _dry_run(
    rule: CompiledRule, scope: Mapping[str, Any], variables: tuple[str, ...] = RULE_VARIABLES
) -> str | None:
    try:
        result = rule.program.execute(dict(scope))
    except RuntimeError as exc:
        # Undeclared variables are RuntimeErrors; name the ones a rule may use.
        return f"{_first_line(exc)} (may use: {', '.join(variables)})"
    except KeyError as exc:
        return (
            f"unknown field or missing key {exc}: rules read the fields listed in the README; "
            "guard optional keys, e.g. has(context.attributes.vip)"
        )
    except (TypeError, ValueError) as exc:
        return f"CEL type error: {_first_line(exc)}"
    if not isinstance(result, bool):
        return f"rule must evaluate to a bool, got {type(result).__name__}"
    return None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
