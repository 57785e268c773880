"""Reads a catalog file, validates it strictly and compiles it into a :class:`Catalog`.

Every problem is reported, each as ``file:line: path: reason``; nothing is silently ignored (unknown keys,
duplicate keys or ids, unknown channels, flows or events, bad CEL are all errors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import ValidationError

from nextbest.catalog.model import (
    Action,
    Campaign,
    Catalog,
    ChannelPolicy,
    Flow,
    Segment,
    Step,
    param_str,
    parse_discount,
)
from nextbest.catalog.policy import Cap, ContactPolicy, Engagement, QuietHours
from nextbest.catalog.rules import CompiledRule, compile_rule, compile_segment
from nextbest.catalog.schema import CatalogSpec, ExperimentSpec, PolicySpec
from nextbest.domain import ActionClass
from nextbest.errors import CatalogError
from nextbest.experiments.model import Arm, Experiment, Namespace

__all__ = ["bundled_catalog_path", "load_catalog", "parse_catalog"]

_Path = tuple[str | int, ...]


def bundled_catalog_path() -> Path:
    """The example catalog shipped with nextbest."""
    return Path(__file__).resolve().parent.parent / "catalogs" / "default.yaml"


def load_catalog(path: str | Path) -> Catalog:
    """Loads and validates the catalog at ``path``; raises :class:`CatalogError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError([f"{path}: cannot read the catalog: {exc.strerror or exc}"]) from exc
    return parse_catalog(text, source=str(path))


def parse_catalog(text: str, source: str = "<catalog>") -> Catalog:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise CatalogError([f"{source}: not valid YAML: {exc}"]) from exc
    if root is None:
        raise CatalogError([f"{source}: the catalog is empty"])
    lines: dict[_Path, int] = {}
    problems = [f"{source}:{line}: {_fmt(path)}: {reason}" for path, line, reason in _walk(root, (), lines)]
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise CatalogError([*problems, f"{source}: the catalog must be a mapping at the top level"])

    def where(path: _Path) -> str:
        for depth in range(len(path), -1, -1):
            if path[:depth] in lines:
                return f"{source}:{lines[path[:depth]]}"
        return source

    try:
        spec = CatalogSpec.model_validate(data)
    except ValidationError as exc:
        problems += [f"{where(tuple(e['loc']))}: {_fmt(tuple(e['loc']))}: {_reason(e)}" for e in exc.errors()]
        # The rules are checked too, so one run reports every problem (CEL ones included).
        problems += [f"{where(path)}: {_fmt(path)}: {reason}" for path, reason in _raw_rule_problems(data)]
        raise CatalogError(problems) from exc

    semantic = list(_check(spec)) + list(_check_experiments(spec)) + list(_check_policy(spec.policy, spec))
    semantic += list(_check_campaigns(spec))
    steps: dict[str, list[Step]] = {}
    step_of: dict[str, int] = {}
    for flow_id, flow_spec in spec.flows.items():
        for s_index, step_spec in enumerate(flow_spec.steps):
            when, when_problems = compile_rule(step_spec.when)
            semantic.extend((("flows", flow_id, "steps", s_index, "when"), p) for p in when_problems)
            step = Step(s_index, step_spec.after, frozenset(step_spec.actions), when or _TRUE)
            steps.setdefault(flow_id, []).append(step)
            step_of.update({a: s_index for a in step_spec.actions})
    rules: list[CompiledRule] = []
    for index, action_spec in enumerate(spec.actions):
        rule, rule_problems = compile_rule(action_spec.rule)
        semantic.extend((("actions", index, "rule"), p) for p in rule_problems)
        if rule is not None:
            rules.append(rule)
    segments: dict[str, Segment] = {}
    for segment_id, segment_spec in spec.segments.items():
        condition, condition_problems = compile_segment(segment_spec.condition)
        semantic.extend((("segments", segment_id, "condition"), p) for p in condition_problems)
        if condition is not None:
            segments[segment_id] = Segment(segment_id, segment_spec.description, condition)
    problems += [f"{where(path)}: {_fmt(path)}: {reason}" for path, reason in semantic]
    if problems:
        raise CatalogError(problems)
    # Built once the spec is known to be valid (an action parses its discount when it is built).
    actions = [
        Action.from_spec(a, rule, step_of.get(a.id)) for a, rule in zip(spec.actions, rules, strict=True)
    ]

    flows = {
        flow_id: Flow.from_spec(
            flow_id, flow, [a for a in actions if a.flow == flow_id], steps.get(flow_id, ())
        )
        for flow_id, flow in spec.flows.items()
    }
    return Catalog(
        version=hashlib.sha256(text.encode("utf-8")).hexdigest()[:12],
        source=source,
        name=spec.name,
        channels={
            ch: ChannelPolicy(c.requires_consent, c.default_consent) for ch, c in spec.channels.items()
        },
        flows=flows,
        actions=tuple(actions),
        extra_triggers=frozenset(spec.triggers),
        experiments=tuple(_experiment(e) for e in spec.experiments),
        policy=_policy(spec.policy),
        segments=segments,
        campaigns={
            campaign_id: Campaign(
                campaign_id,
                c.description,
                c.audience,
                c.trigger,
                c.start,
                c.stop,
                c.budget.sends,
                c.holdout,
                c.targeting,
                max_discount=c.budget.discount,
            )
            for campaign_id, c in spec.campaigns.items()
        },
    )


_TRUE = CompiledRule("true", None)


def _raw_rule_problems(data: dict[str, Any]) -> Iterator[tuple[_Path, str]]:
    """The CEL problems of the rules in a catalog that did not validate (read from the raw YAML)."""
    actions = data.get("actions")
    for index, action in enumerate(actions if isinstance(actions, list) else []):
        if isinstance(action, dict) and isinstance(action.get("rule"), str):
            for problem in compile_rule(action["rule"])[1]:
                yield ("actions", index, "rule"), problem
    flows = data.get("flows")
    for flow_id, flow in (flows if isinstance(flows, dict) else {}).items():
        steps = flow.get("steps") if isinstance(flow, dict) else None
        for s_index, step in enumerate(steps if isinstance(steps, list) else []):
            if isinstance(step, dict) and isinstance(step.get("when"), str):
                for problem in compile_rule(step["when"])[1]:
                    yield ("flows", flow_id, "steps", s_index, "when"), problem


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _policy(spec: PolicySpec) -> ContactPolicy:
    return ContactPolicy(
        time_zone=ZoneInfo(spec.time_zone),
        caps=tuple(
            Cap(c.id or f"caps[{i}]", c.limit, c.window, frozenset(c.classes), frozenset(c.channels))
            for i, c in enumerate(spec.caps)
        ),
        quiet_hours={
            ch: QuietHours(_clock(q.start), _clock(q.end), frozenset(q.classes))
            for ch, q in spec.quiet_hours.items()
        },
        engagement=(
            Engagement(spec.engagement.window, frozenset(spec.engagement.classes))
            if spec.engagement is not None
            else None
        ),
    )


def _check_policy(policy: PolicySpec, spec: CatalogSpec) -> Iterator[tuple[_Path, str]]:
    try:
        ZoneInfo(policy.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        yield (
            ("policy", "time_zone"),
            f"unknown time zone {policy.time_zone!r}; use an IANA name such as Europe/Paris",
        )
    ids: dict[str, int] = {}
    for index, cap in enumerate(policy.caps):
        at: _Path = ("policy", "caps", index)
        if cap.id is not None:
            if cap.id in ids:
                yield (*at, "id"), f"duplicate cap id {cap.id!r} (first at policy.caps[{ids[cap.id]}])"
            ids.setdefault(cap.id, index)
        if ActionClass.TRANSACTIONAL in cap.classes:
            yield (*at, "classes"), "transactional actions are never capped"
        if not cap.classes:
            yield (*at, "classes"), "a cap needs at least one class"
        if cap.window.total_seconds() <= 0:
            yield (*at, "window"), "the window must be longer than 0"
        for c_index, channel in enumerate(cap.channels):
            if channel not in spec.channels:
                yield (*at, "channels", c_index), f"channel {channel.value!r} is not declared"
    for channel, quiet in policy.quiet_hours.items():
        if channel not in spec.channels:
            yield ("policy", "quiet_hours", channel.value), f"channel {channel.value!r} is not declared"
        if quiet.start == quiet.end:
            yield ("policy", "quiet_hours", channel.value), "start and end are equal: no quiet period"
    if policy.engagement is not None and ActionClass.TRANSACTIONAL in policy.engagement.classes:
        yield ("policy", "engagement", "classes"), "transactional actions never stop for lack of engagement"


def _check(spec: CatalogSpec) -> Iterator[tuple[_Path, str]]:
    seen: dict[str, int] = {}
    for index, action in enumerate(spec.actions):
        if action.id in seen:
            yield (
                ("actions", index, "id"),
                f"duplicate action id {action.id!r} (first at actions[{seen[action.id]}])",
            )
        seen.setdefault(action.id, index)
        if action.flow not in spec.flows:
            yield (
                ("actions", index, "flow"),
                f"unknown flow {action.flow!r}; declared flows: {_names(spec.flows)}",
            )
        if action.channel not in spec.channels:
            yield (
                ("actions", index, "channel"),
                f"unknown channel {action.channel.value!r}: "
                f"not declared under channels ({_names(spec.channels)})",
            )
        if action.send_time == "optimize" and action.action_class is ActionClass.TRANSACTIONAL:
            yield (
                ("actions", index, "send_time"),
                "a transactional action is sent when due; only marketing actions optimize their send time",
            )
        for t_index, trigger in enumerate(action.triggers):
            if action.triggers.index(trigger) != t_index:
                yield ("actions", index, "triggers", t_index), f"trigger {trigger!r} listed twice"
        if action.discount_parameter is not None:
            name = action.discount_parameter
            if name not in action.parameters:
                yield (
                    ("actions", index, "discount_parameter"),
                    f"names {name!r}, which is not among the action's parameters",
                )
            else:
                yield from _check_discount(action.parameters[name], ("actions", index, "parameters", name))
    yield from _check_steps(spec)
    answered = {t for a in spec.actions for t in a.triggers}
    for flow_id, flow in spec.flows.items():
        if not any(a.flow == flow_id for a in spec.actions):
            yield ("flows", flow_id), "flow has no actions"
        for t_index, trigger in enumerate(flow.entry_triggers or ()):
            if trigger not in answered and trigger not in spec.triggers:
                yield (
                    ("flows", flow_id, "entry_triggers", t_index),
                    f"unknown trigger {trigger!r}: no action answers it and it is not under triggers",
                )


def _check_steps(spec: CatalogSpec) -> Iterator[tuple[_Path, str]]:
    actions = {a.id: a for a in spec.actions}
    placed: dict[str, str] = {}
    for flow_id, flow in spec.flows.items():
        previous = None
        for s_index, step in enumerate(flow.steps):
            at: _Path = ("flows", flow_id, "steps", s_index)
            if previous is not None and step.after < previous:
                yield (*at, "after"), "steps must be in order of time after entry"
            previous = step.after
            for a_index, action_id in enumerate(step.actions):
                action = actions.get(action_id)
                if action is None:
                    yield (*at, "actions", a_index), f"unknown action {action_id!r}"
                    continue
                if action.flow != flow_id:
                    yield (*at, "actions", a_index), f"{action_id!r} belongs to flow {action.flow!r}"
                if action_id in placed:
                    yield (*at, "actions", a_index), f"{action_id!r} is already in {placed[action_id]}"
                placed[action_id] = f"flows.{flow_id}.steps[{s_index}]"
                if action.delay.total_seconds():
                    yield (
                        (*at, "actions", a_index),
                        f"{action_id!r} declares a delay; a step's action is timed by the step's after",
                    )
        if flow.steps:
            for index, action in enumerate(spec.actions):
                if action.flow == flow_id and action.id not in placed:
                    yield (
                        ("actions", index, "flow"),
                        f"flow {flow_id!r} has steps and {action.id!r} is in none",
                    )


def _check_discount(value: str | bool | int | float, at: _Path) -> Iterator[tuple[_Path, str]]:
    try:
        parse_discount(param_str(value))
    except ValueError as e:
        yield at, str(e)


def _check_campaigns(spec: CatalogSpec) -> Iterator[tuple[_Path, str]]:
    """A campaign targets a declared segment, answers a trigger that only promotional actions answer,
    runs in a window that ends after it starts, and names a holdout experiment that covers its actions."""
    experiments = {e.id: e for e in spec.experiments}
    for campaign_id, c in spec.campaigns.items():
        at: _Path = ("campaigns", campaign_id)
        if c.audience not in spec.segments:
            known = ", ".join(sorted(spec.segments)) or "none declared"
            yield (*at, "audience"), f"unknown segment {c.audience!r} (segments: {known})"
        actions = [a for a in spec.actions if c.trigger in a.triggers]
        if not actions:
            yield (*at, "trigger"), f"no action answers trigger {c.trigger!r}"
        not_promotional = [a.id for a in actions if a.action_class is not ActionClass.PROMOTIONAL]
        if not_promotional:
            yield (
                (*at, "trigger"),
                f"a campaign's actions must be promotional; {', '.join(not_promotional)} "
                f"answer{'s' if len(not_promotional) == 1 else ''} {c.trigger!r} too",
            )
        if c.stop <= c.start:
            yield (*at, "stop"), "stop must be after start"
        if c.targeting in ("ranked", "propensity") and c.budget.sends is None:
            yield (
                (*at, "targeting"),
                f"{c.targeting} targeting needs a budget (budget.sends) to rank within",
            )
        if c.budget.discount is not None and c.targeting == "everyone":
            yield (
                (*at, "budget", "discount"),
                "a discount budget needs targeting propensity, ranked or uplift (each member's expected "
                "discount is estimated before the run, best first)",
            )
        if c.holdout is not None:
            experiment = experiments.get(c.holdout)
            if experiment is None:
                yield (*at, "holdout"), f"unknown experiment {c.holdout!r}"
            elif actions and not any(
                _experiment(experiment).covers(a.id, a.flow, a.action_class) for a in actions
            ):
                yield (*at, "holdout"), f"experiment {c.holdout!r} covers none of the campaign's actions"


def _experiment(spec: ExperimentSpec) -> Experiment:
    ns = spec.namespace
    return Experiment(
        id=spec.id,
        seed=spec.seed or spec.id,
        hash_version=spec.hash_version,
        arms=tuple(
            Arm(
                a.id,
                a.weight,
                a.no_action,
                {k: param_str(v) for k, v in a.parameters.items()} or None,
                a.delay,
                a.channel,
                a.send_time,
            )
            for a in spec.arms
        ),
        coverage=spec.coverage,
        namespace=Namespace(ns.id, ns.start, ns.end) if ns else None,
        flows=frozenset(spec.scope.flows),
        actions=frozenset(spec.scope.actions),
        classes=frozenset(spec.scope.classes),
        start=spec.start,
        stop=spec.stop,
        description=spec.description,
    )


def _check_experiments(spec: CatalogSpec) -> Iterator[tuple[_Path, str]]:
    actions = {a.id: a for a in spec.actions}
    discounts = {a.discount_parameter for a in spec.actions if a.discount_parameter}
    seen: dict[str, int] = {}
    slices: dict[str, list[tuple[float, float, str]]] = {}
    for index, exp in enumerate(spec.experiments):
        at: _Path = ("experiments", index)
        if exp.id in seen:
            yield (*at, "id"), f"duplicate experiment id {exp.id!r} (first at experiments[{seen[exp.id]}])"
        seen.setdefault(exp.id, index)
        total = sum(a.weight for a in exp.arms)
        if abs(total - 1.0) > 1e-6:
            yield (*at, "arms"), f"arm weights sum to {total:g}, not 1"
        arm_ids = [a.id for a in exp.arms]
        for a_index, arm in enumerate(exp.arms):
            if arm_ids.index(arm.id) != a_index:
                yield (*at, "arms", a_index, "id"), f"duplicate arm id {arm.id!r}"
            if arm.channel is not None and arm.channel not in spec.channels:
                yield (*at, "arms", a_index, "channel"), f"channel {arm.channel.value!r} is not declared"
            for name, value in (arm.parameters or {}).items():
                if name in discounts:  # some action reads this parameter as its discount
                    yield from _check_discount(value, (*at, "arms", a_index, "parameters", name))
            if arm.send_time is not None and arm.no_action:
                yield (
                    (*at, "arms", a_index, "send_time"),
                    "a no_action arm sends nothing; it cannot set a send time",
                )
        yield from _check_send_time_arms(spec, exp, at)
        if exp.start and exp.stop and exp.stop <= exp.start:
            yield (*at, "stop"), "stop must be after start"
        scope = exp.scope
        for f_index, flow in enumerate(scope.flows):
            if flow not in spec.flows:
                yield (*at, "scope", "flows", f_index), f"unknown flow {flow!r}"
            elif all(a.action_class is ActionClass.TRANSACTIONAL for a in spec.actions if a.flow == flow):
                yield (
                    (*at, "scope", "flows", f_index),
                    f"{flow!r} is transactional; it is never in experiments",
                )
        for a_index, action_id in enumerate(scope.actions):
            if action_id not in actions:
                yield (*at, "scope", "actions", a_index), f"unknown action {action_id!r}"
            elif actions[action_id].action_class is ActionClass.TRANSACTIONAL:
                yield (
                    (*at, "scope", "actions", a_index),
                    f"{action_id!r} is transactional; it is never held out",
                )
        if ActionClass.TRANSACTIONAL in scope.classes:
            yield (*at, "scope", "classes"), "transactional actions are never in experiments"
        if exp.namespace is not None:
            ns = exp.namespace
            if ns.end <= ns.start:
                yield (*at, "namespace"), "the namespace range must have end > start"
            for start, end, other in slices.get(ns.id, []):
                if ns.start < end and start < ns.end:
                    yield (
                        (*at, "namespace"),
                        f"overlaps {other}'s range [{start:g}, {end:g}) in namespace {ns.id!r}: "
                        "experiments sharing a namespace must not share units",
                    )
            slices.setdefault(ns.id, []).append((ns.start, ns.end, exp.id))


def _check_send_time_arms(spec: CatalogSpec, exp: ExperimentSpec, at: _Path) -> Iterator[tuple[_Path, str]]:
    """An experiment whose arms set send times compares them: its scope names the actions it times (no
    whole class or flow of actions it could reach by accident), every one a marketing action outside a
    flow's steps (a step is due when its journey says; its send time is the step's), and its arms differ."""
    timed = [a for a in exp.arms if a.send_time is not None]
    if not timed:
        return
    if exp.scope.flows or exp.scope.classes or not exp.scope.actions:
        yield (
            (*at, "scope"),
            "an experiment whose arms set send_time must name its actions (scope.actions) and nothing else",
        )
    if len({a.send_time for a in exp.arms if not a.no_action}) < 2 or len(timed) != len(exp.arms):
        yield (
            (*at, "arms"),
            "every arm of a send-time experiment sets send_time, and they differ (e.g. fixed and optimize)",
        )
    stepped = {action for flow in spec.flows.values() for step in flow.steps for action in step.actions}
    for a_index, action_id in enumerate(exp.scope.actions):
        if action_id in stepped:
            yield (
                (*at, "scope", "actions", a_index),
                f"{action_id!r} is a flow step's action, sent when its step is due; its send time "
                "cannot be an experiment's arm",
            )


def _walk(node: yaml.Node, path: _Path, lines: dict[_Path, int]) -> Iterator[tuple[_Path, int, str]]:
    """Records the line of every path and reports duplicate mapping keys (PyYAML keeps the last silently)."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                yield (
                    (*path, key),
                    key_node.start_mark.line + 1,
                    f"duplicate key (first on line {seen[key]})",
                )
                continue
            seen[key] = key_node.start_mark.line + 1
            yield from _walk(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _walk(item, (*path, index), lines)


def _fmt(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _reason(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "enum" and "expected" in error.get("ctx", {}):
        return f"unknown value {error['input']!r}; expected {error['ctx']['expected']}"
    return str(error["msg"])


def _names(names: Iterable[object]) -> str:
    return ", ".join(str(getattr(n, "value", n)) for n in names) or "none"
