"""The permission engine: pure data in, a decision and the rule that fired out. No Django, no I/O.

Semantics (docs/policy.md): default deny; deny beats require_approval beats allow; among rules
of one effect the lowest id fires; a rule applies when its resource glob matches the name, it
is inside its validity window and every condition holds; a shadow rule is evaluated and
reported, never enforced.

A tenant's rules are compiled once per policy version; each agent's effective rules (its own,
its roles', the tenant-wide ones) are indexed on first use: per resource kind one RE2 set
matches the name against every glob in a single linear pass.
"""

from __future__ import annotations

import bisect
import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import re2

from governance.engine.conditions import (
    RE2_OPTIONS,
    Condition,
    ConditionError,
    ConditionSpec,
    glob_to_re2,
)

logger = logging.getLogger(__name__)

RESOURCE_KINDS = ("tool",)  # "llm_model" and "agent" plug in here: a kind is only a name
MAX_GLOB = 200


class Effect(enum.StrEnum):
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"
    ALLOW = "allow"


EFFECTS = frozenset(Effect)  # StrEnum members hash as their strings: "deny" in EFFECTS
_PRECEDENCE = {Effect.DENY: 0, Effect.REQUIRE_APPROVAL: 1, Effect.ALLOW: 2}
_VERB = {
    Effect.DENY: "denied",
    Effect.REQUIRE_APPROVAL: "approval required",
    Effect.ALLOW: "allowed",
}


class PolicyError(ValueError):
    """A rule that cannot be compiled; ``field`` names the part (``conditions[1].value``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule as stored. ``agent_id`` and ``role_id`` both None: every agent of the tenant."""

    id: int
    effect: Effect
    resource: str  # glob over the name: "git__*", "*__delete_*"
    resource_kind: str = "tool"
    conditions: tuple[ConditionSpec, ...] = ()
    agent_id: int | None = None
    role_id: int | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    shadow: bool = False
    description: str = ""
    # (field, message) when the stored conditions could not be read: compiling reports it.
    unreadable: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    effect: Effect
    reason: str
    rule_id: int | None = None  # None: the default deny
    # Shadow rules whose conditions held, and what the decision would be were they enforced.
    shadow_rule_ids: tuple[int, ...] = ()
    shadow_effect: Effect | None = None
    shadow_rule_id: int | None = None

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    def shadow_record(self) -> dict[str, Any]:
        """The shadow verdicts as the audit record keeps them; empty when none held."""
        if not self.shadow_rule_ids:
            return {}
        return {
            "rules": list(self.shadow_rule_ids),
            "effect": self.shadow_effect,
            "rule": self.shadow_rule_id,
        }


class CompiledRule:
    __slots__ = ("conditions", "effect", "id", "reason", "shadow", "since", "spec", "until")

    def __init__(self, spec: RuleSpec) -> None:
        self.spec, self.id, self.effect, self.shadow = spec, spec.id, spec.effect, spec.shadow
        self.since = spec.valid_from.timestamp() if spec.valid_from else None
        self.until = spec.valid_until.timestamp() if spec.valid_until else None
        strict = spec.effect is Effect.ALLOW
        conditions = []
        for i, condition in enumerate(spec.conditions):
            try:
                conditions.append(Condition(condition, strict=strict))
            except ConditionError as exc:
                raise PolicyError(f"conditions[{i}].{exc.field}", exc.message) from None
        self.conditions = tuple(conditions)
        label = f"rule {spec.id}" + (f" ({spec.description})" if spec.description else "")
        self.reason = f"{_VERB[spec.effect]} by {label}"

    def active(self, now: float) -> bool:
        return (self.since is None or now >= self.since) and (
            self.until is None or now < self.until
        )

    def holds(self, arguments: Any) -> bool:
        for condition in self.conditions:  # noqa: SIM110 - a plain loop: the hot path
            if not condition.holds(arguments):
                return False
        return True


def rule_compile(spec: RuleSpec) -> CompiledRule:
    """Validate and compile one rule; raises PolicyError naming the faulty field."""
    if spec.unreadable is not None:
        raise PolicyError(*spec.unreadable)
    if not isinstance(spec.effect, Effect):
        raise PolicyError("effect", f"one of {', '.join(e.value for e in Effect)}")
    if spec.resource_kind not in RESOURCE_KINDS:
        raise PolicyError("resource_kind", f"one of {', '.join(RESOURCE_KINDS)}")
    if not spec.resource or len(spec.resource) > MAX_GLOB:
        raise PolicyError("resource", f"a glob of 1 to {MAX_GLOB} characters")
    if spec.agent_id is not None and spec.role_id is not None:
        raise PolicyError("agent", "a rule targets one agent or one role, not both")
    if spec.valid_from and spec.valid_until and spec.valid_from >= spec.valid_until:
        raise PolicyError("valid_until", "must be after valid_from")
    return CompiledRule(spec)


class _KindIndex:
    """The rules of one resource kind, in precedence order, and one RE2 set over their globs."""

    __slots__ = ("has_shadow", "matcher", "rules")

    def __init__(self, rules: list[CompiledRule]) -> None:
        self.rules = rules
        self.has_shadow = any(rule.shadow for rule in rules)
        self.matcher = re2.Set.FullMatchSet(RE2_OPTIONS)
        for rule in rules:
            self.matcher.Add(glob_to_re2(rule.spec.resource))
        self.matcher.Compile()

    def candidates(self, name: str) -> list[CompiledRule]:
        hits = self.matcher.Match(name)  # None when nothing matches
        if not hits:
            return []
        hits.sort()
        rules = self.rules
        return [rules[i] for i in hits]


@dataclass(frozen=True, slots=True)
class RuleTrace:
    rule_id: int
    effect: Effect
    shadow: bool
    description: str
    active: bool
    holds: bool
    conditions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    rules: tuple[RuleTrace, ...]  # every rule whose glob matched the name, precedence order

    def lines(self) -> list[str]:
        d = self.decision
        out = [f"decision: {d.effect} — {d.reason}"]
        if d.shadow_rule_ids:
            ids = ", ".join(map(str, d.shadow_rule_ids))
            out.append(
                f"shadow: rule {ids} applies; were shadow rules enforced, the decision would "
                f"be {d.shadow_effect} (rule {d.shadow_rule_id})"
            )
        if not self.rules:
            out.append("no rule's resource glob matches this name")
        for r in self.rules:
            state = "applies" if r.active and r.holds else "does not apply"
            tags = " [shadow]" if r.shadow else ""
            tags += "" if r.active else " [outside its validity window]"
            text = f" — {r.description}" if r.description else ""
            out.append(f"rule {r.rule_id} {r.effect}{tags}: {state}{text}")
            out.extend(f"    {c}" for c in r.conditions)
        return out


class AgentPolicy:
    """One agent's effective rules, indexed for deciding."""

    __slots__ = ("_kinds",)

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        by_kind: dict[str, list[CompiledRule]] = {}
        for rule in sorted(rules, key=lambda r: (_PRECEDENCE[r.effect], r.id)):
            by_kind.setdefault(rule.spec.resource_kind, []).append(rule)
        self._kinds = {kind: _KindIndex(rules) for kind, rules in by_kind.items()}

    def _candidates(self, kind: str, name: str) -> list[CompiledRule]:
        index = self._kinds.get(kind)
        return index.candidates(name) if index is not None else []

    def decide(self, kind: str, name: str, arguments: Any, *, now: float) -> Decision:
        index = self._kinds.get(kind)
        enforced: CompiledRule | None = None
        would_be: CompiledRule | None = None  # the first rule that holds, shadow or not
        shadows: list[int] = []
        for rule in index.candidates(name) if index is not None else ():
            if rule.shadow:
                if rule.active(now) and rule.holds(arguments):
                    shadows.append(rule.id)
                    would_be = would_be or rule
            elif enforced is None and rule.active(now) and rule.holds(arguments):
                enforced = rule
                would_be = would_be or rule
                if not index.has_shadow:
                    break
        if enforced is None:
            decision = Decision(Effect.DENY, f"no rule allows {kind} {name!r} for this agent")
        else:
            decision = Decision(enforced.effect, enforced.reason, enforced.id)
        if not shadows:
            return decision
        assert would_be is not None  # a shadow rule held
        return replace(
            decision,
            shadow_rule_ids=tuple(shadows),
            shadow_effect=would_be.effect,
            shadow_rule_id=would_be.id,
        )

    def visible(self, kind: str, name: str, *, now: float) -> bool:
        """Whether some arguments could be allowed (or sent for approval): an enforced allow or
        require_approval rule applies to the name, and no unconditional deny does."""
        for rule in self._candidates(kind, name):
            if rule.shadow or not rule.active(now):
                continue
            if rule.effect is Effect.DENY:
                if not rule.conditions:
                    return False
            else:
                return True
        return False

    def explain(self, kind: str, name: str, arguments: Any, *, now: float) -> Explanation:
        traces = tuple(
            RuleTrace(
                rule_id=rule.id,
                effect=rule.effect,
                shadow=rule.shadow,
                description=rule.spec.description,
                active=rule.active(now),
                holds=rule.holds(arguments),
                conditions=tuple(c.describe(arguments) for c in rule.conditions),
            )
            for rule in self._candidates(kind, name)
        )
        return Explanation(self.decide(kind, name, arguments, now=now), traces)


@dataclass
class TenantPolicy:
    """A tenant's rules and role memberships; compiled once, indexed per agent on demand.

    A stored rule that does not compile (edited behind the application's back) fails closed:
    see ``fail_closed``. ``broken`` lists such rules with the reason.
    """

    rules: tuple[RuleSpec, ...] = ()
    roles_by_agent: Mapping[int, frozenset[int]] = field(default_factory=dict)
    broken: dict[int, str] = field(default_factory=dict)
    _compiled: list[CompiledRule] = field(init=False, default_factory=list)
    _agents: dict[int, AgentPolicy] = field(init=False, default_factory=dict)
    _edges: list[float] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        for spec in self.rules:
            try:
                self._compiled.append(rule_compile(spec))
            except PolicyError as exc:
                self.broken[spec.id] = str(exc)
                if (fallback := fail_closed(spec)) is not None:
                    self._compiled.append(CompiledRule(fallback))
        self._edges = sorted(
            edge for rule in self._compiled for edge in (rule.since, rule.until) if edge is not None
        )
        for rule_id, problem in self.broken.items():
            logger.error("rule %s does not compile (%s); it fails closed", rule_id, problem)

    def for_agent(self, agent_id: int) -> AgentPolicy:
        policy = self._agents.get(agent_id)
        if policy is None:
            roles = self.roles_by_agent.get(agent_id, frozenset())
            policy = AgentPolicy(
                rule
                for rule in self._compiled
                if rule.spec.agent_id == agent_id
                or (rule.spec.role_id is not None and rule.spec.role_id in roles)
                or (rule.spec.agent_id is None and rule.spec.role_id is None)
            )
            self._agents[agent_id] = policy
        return policy

    def window_edge_between(self, since: float, until: float) -> bool:
        """Whether a rule's validity window opened or closed in (since, until]: what agents
        may see changed without any write."""
        i = bisect.bisect_right(self._edges, since)
        return i < len(self._edges) and self._edges[i] <= until


def fail_closed(spec: RuleSpec) -> RuleSpec | None:
    """What a rule that cannot be compiled still does: a deny or require_approval rule applies
    to its whole glob, without conditions or window; an allow rule does nothing."""
    # By value, not identity: an effect given as a plain string ("allow", "bogus") never
    # becomes an unconditional rule.
    if spec.effect not in (Effect.DENY, Effect.REQUIRE_APPROVAL):
        return None
    if not spec.resource or spec.shadow:
        return None
    effect = Effect(spec.effect)
    return replace(
        spec, effect=effect, conditions=(), valid_from=None, valid_until=None, unreadable=None
    )
