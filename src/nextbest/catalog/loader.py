"""Reads a catalog file, validates it strictly and compiles it into a :class:`Catalog`.

Every problem is reported, each as ``file:line: path: reason``; nothing is silently ignored (unknown keys,
duplicate keys or ids, unknown channels, flows or events, bad CEL are all errors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nextbest.catalog.model import Action, Catalog, ChannelPolicy, Flow, param_str
from nextbest.catalog.rules import compile_rule
from nextbest.catalog.schema import CatalogSpec, ExperimentSpec
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
        raise CatalogError(problems) from exc

    semantic = list(_check(spec)) + list(_check_experiments(spec))
    actions: list[Action] = []
    for index, action_spec in enumerate(spec.actions):
        rule, rule_problems = compile_rule(action_spec.rule)
        semantic.extend((("actions", index, "rule"), p) for p in rule_problems)
        if rule is not None:
            actions.append(Action.from_spec(action_spec, rule))
    problems += [f"{where(path)}: {_fmt(path)}: {reason}" for path, reason in semantic]
    if problems:
        raise CatalogError(problems)

    flows = {
        flow_id: Flow.from_spec(flow_id, flow, [a for a in actions if a.flow == flow_id])
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
    )


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
        for t_index, trigger in enumerate(action.triggers):
            if action.triggers.index(trigger) != t_index:
                yield ("actions", index, "triggers", t_index), f"trigger {trigger!r} listed twice"
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
