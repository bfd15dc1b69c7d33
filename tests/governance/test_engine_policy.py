"""The permission engine: precedence, shadow rules, windows, targeting, visibility,
explanations and fail-closed compilation. Property tests check the engine against an
independent oracle written from the documented semantics."""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.engine.conditions import ConditionSpec
from governance.engine.policy import (
    MAX_GLOB,
    AgentPolicy,
    Decision,
    Effect,
    PolicyError,
    RuleSpec,
    TenantPolicy,
    fail_closed,
    rule_compile,
)

NOW_DT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
NOW = NOW_DT.timestamp()
PAST, FUTURE = NOW_DT - timedelta(days=1), NOW_DT + timedelta(days=1)
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def policy(*specs: RuleSpec) -> AgentPolicy:
    return AgentPolicy(rule_compile(spec) for spec in specs)


def decide(agent_policy: AgentPolicy, name: str, arguments=None, now: float = NOW) -> Decision:
    return agent_policy.decide("tool", name, arguments or {}, now=now)


def rule(id, effect, resource="*", *conditions, **fields) -> RuleSpec:
    return RuleSpec(
        id=id, effect=Effect(effect), resource=resource, conditions=conditions, **fields
    )


BRANCH_MAIN = ConditionSpec("$.branch", "equals", "main")
UNDER_REPOS = ConditionSpec("$.path", "path_under", "/srv/repos")


# --- an independent oracle ----------------------------------------------------------------------
def glob_matches(glob: str, name: str) -> bool:
    """``*`` any run of characters, ``?`` exactly one, everything else literal."""

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(glob):
            return j == len(name)
        if glob[i] == "*":
            return match(i + 1, j) or (j < len(name) and match(i, j + 1))
        return j < len(name) and glob[i] in ("?", name[j]) and match(i + 1, j + 1)

    return match(0, 0)


def _range_verdict(value):
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return 0 <= value <= 5


def _equals_verdict(value):
    if isinstance(value, list | dict):
        return None
    return isinstance(value, str) and value == "a"


# name → (spec, argument key, verdict of one value)
CONDITION_KINDS = {
    "n_in_range": (ConditionSpec("$.n", "range", {"min": 0, "max": 5}), "n", _range_verdict),
    "s_is_a": (ConditionSpec("$.s", "equals", "a"), "s", _equals_verdict),
}


def condition_holds(kind: str, negate: bool, strict: bool, arguments: dict) -> bool:
    _, key, verdict_of = CONDITION_KINDS[kind]
    if key not in arguments:
        return negate
    verdict = verdict_of(arguments[key])
    if strict:
        return verdict is not None and verdict != negate
    return verdict is None or verdict != negate


def applies(spec: RuleSpec, kinds: tuple, name: str, arguments: dict, now: float = NOW) -> bool:
    if not glob_matches(spec.resource, name):
        return False
    if spec.valid_from is not None and now < spec.valid_from.timestamp():
        return False
    if spec.valid_until is not None and now >= spec.valid_until.timestamp():
        return False
    strict = spec.effect is Effect.ALLOW
    return all(condition_holds(kind, negate, strict, arguments) for kind, negate in kinds)


ORDER = (Effect.DENY, Effect.REQUIRE_APPROVAL, Effect.ALLOW)


def expected_winner(rules, name, arguments, *, with_shadow=False):
    """(effect, rule id) of the documented decision; (DENY, None) by default."""
    hits = [
        spec
        for spec, kinds in rules
        if (with_shadow or not spec.shadow) and applies(spec, kinds, name, arguments)
    ]
    for effect in ORDER:
        ids = [spec.id for spec in hits if spec.effect is effect]
        if ids:
            return effect, min(ids)
    return Effect.DENY, None


# --- strategies ---------------------------------------------------------------------------------
NAMES = ["git__push", "git__pull", "fs__read", "fs__delete_all", "x", "git__p", "a.b", "ü"]
GLOBS = ["*", "git__*", "*__push", "fs__*", "git__p???", "?", "*delete*", "fs__read", "a.b", "??"]
ODD = "ab*?.[]\\+()^$|{}ü_"
# Mostly names and globs that meet, some odd text to check that only * and ? are special.
names = st.one_of(
    *[st.sampled_from(NAMES)] * 3, st.text(alphabet=ODD.replace("*", "").replace("?", ""))
)
globs = st.sampled_from(GLOBS) | st.just("*") | st.text(alphabet=ODD, min_size=1, max_size=6)
WINDOWS = [
    (None, None),
    (PAST, None),
    (None, FUTURE),
    (PAST, FUTURE),
    (NOW_DT, FUTURE),  # starts now: active
    (PAST, NOW_DT),  # ends now: inactive
    (FUTURE, None),
    (None, PAST),
]
conditions = st.lists(
    st.tuples(st.sampled_from(sorted(CONDITION_KINDS)), st.booleans()), max_size=2, unique=True
)
argument_values = {
    "n": st.sampled_from([-1, 0, 3, 5, 6, 2.5, "3", True, None, [3]]),
    "s": st.sampled_from(["a", "b", "", 1, None, ["a"]]),
}
arguments = st.fixed_dictionaries({}, optional=argument_values)


@st.composite
def rule_sets(draw, *, shadow=None, min_size=1, max_size=8, exclude_ids=frozenset()):
    """A list of (RuleSpec, condition kinds) with distinct ids."""
    ids = draw(
        st.lists(
            st.integers(1, 60).filter(lambda i: i not in exclude_ids),
            min_size=min_size,
            max_size=max_size,
            unique=True,
        )
    )
    out = []
    for rule_id in ids:
        kinds = tuple(draw(conditions))
        valid_from, valid_until = draw(st.sampled_from(WINDOWS))
        spec = RuleSpec(
            id=rule_id,
            effect=draw(st.sampled_from([*ORDER, Effect.ALLOW])),
            resource=draw(globs),
            conditions=tuple(replace(CONDITION_KINDS[k][0], negate=neg) for k, neg in kinds),
            valid_from=valid_from,
            valid_until=valid_until,
            shadow=draw(st.booleans()) if shadow is None else shadow,
        )
        out.append((spec, kinds))
    return out


def engine(rules) -> AgentPolicy:
    return TenantPolicy(tuple(spec for spec, _ in rules)).for_agent(1)


# --- properties ---------------------------------------------------------------------------------
@PROPERTY
@given(rules=rule_sets(), name=names, args=arguments)
def test_the_reported_rule_is_the_lowest_id_applying_rule_of_the_winning_effect(rules, name, args):
    decision = decide(engine(rules), name, args)
    assert (decision.effect, decision.rule_id) == expected_winner(rules, name, args)


@PROPERTY
@given(
    rules=rule_sets(),
    deny_id=st.integers(1, 60),
    deny_glob=st.sampled_from(["*", "?*", "*?"]),
    name=names.filter(bool),
    args=arguments,
)
def test_deny_always_wins(rules, deny_id, deny_glob, name, args):
    rules = [(s, k) for s, k in rules if s.id != deny_id]
    rules.append((rule(deny_id, "deny", deny_glob), ()))  # an enforced deny that applies
    decision = decide(engine(rules), name, args)
    applying_denies = [
        s.id
        for s, k in rules
        if s.effect is Effect.DENY and not s.shadow and applies(s, k, name, args)
    ]
    assert deny_id in applying_denies
    assert decision.effect is Effect.DENY
    assert decision.rule_id == min(applying_denies)
    assert not decision.allowed


@PROPERTY
@given(rules=rule_sets(), name=names, args=arguments)
def test_nothing_is_allowed_without_an_applying_allow_rule(rules, name, args):
    decision = decide(engine(rules), name, args)
    allows = [
        s.id
        for s, k in rules
        if s.effect is Effect.ALLOW and not s.shadow and applies(s, k, name, args)
    ]
    others = [
        s.id
        for s, k in rules
        if s.effect is not Effect.ALLOW and not s.shadow and applies(s, k, name, args)
    ]
    if decision.allowed:
        assert decision.rule_id in allows
        assert not others
    else:
        assert not allows or others


@PROPERTY
@given(data=st.data(), name=names, args=arguments)
def test_shadow_rules_never_change_the_enforced_decision(data, name, args):
    rules = data.draw(rule_sets())
    before = decide(engine(rules), name, args)
    taken = frozenset(spec.id for spec, _ in rules)
    extra = data.draw(rule_sets(shadow=True, min_size=1, exclude_ids=taken))
    after = decide(engine(rules + extra), name, args)
    assert (after.effect, after.rule_id, after.reason) == (
        before.effect,
        before.rule_id,
        before.reason,
    )
    # ... and the shadow verdicts are reported: which shadow rules held, and the decision
    # were they enforced.
    everything = rules + extra
    held = [spec for spec, kinds in everything if spec.shadow and applies(spec, kinds, name, args)]
    if not held:
        assert after.shadow_rule_ids == ()
        assert after.shadow_effect is None
        assert after.shadow_rule_id is None
        assert after.shadow_record() == {}
    else:
        assert set(after.shadow_rule_ids) == {spec.id for spec in held}
        effect, rule_id = expected_winner(everything, name, args, with_shadow=True)
        assert (after.shadow_effect, after.shadow_rule_id) == (effect, rule_id)
        assert after.shadow_record() == {
            "rules": list(after.shadow_rule_ids),
            "effect": effect,
            "rule": rule_id,
        }


@PROPERTY
@given(glob=globs, name=names)
def test_a_resource_glob_treats_only_star_and_question_mark_as_special(glob, name):
    decision = decide(policy(rule(1, "allow", glob)), name)
    assert decision.allowed is glob_matches(glob, name)


# --- paths cannot be escaped --------------------------------------------------------------------
SEGMENTS = [
    "srv",
    "repos",
    "repos-evil",
    "a",
    "..",
    ".",
    "",
    "...",
    "%2e%2e",
    "%2E",
    "%2f",
    "..%2f..",
    "%252e%252e",
    "\\",
    "..\\..",
    "\uff0e\uff0e",  # fullwidth full stops
    "\uff0f",  # fullwidth solidus
    "\u2025",  # two dot leader
    "\uff3c",  # fullwidth reverse solidus
    "\uff052e",  # fullwidth percent
    "etc",
    "\x00",
    "é",
]
paths = st.builds(
    lambda start, segments: start + "/".join(segments),
    st.sampled_from(["/srv/repos/"] * 4 + ["/", "", "//", "/srv/repos", "./", "/srv/"]),
    st.lists(st.sampled_from(SEGMENTS + ["a", "b"] * 4), max_size=8),
)


def readings(path: str) -> set[str]:
    """What other layers might make of the path: NFKC folding, percent-decoding (twice),
    backslashes as separators, in every combination."""
    out = set()
    for nfkc in (False, True):
        for decode in (False, True):
            for backslash in (False, True):
                reading = unicodedata.normalize("NFKC", path) if nfkc else path
                reading = unquote(unquote(reading)) if decode else reading
                out.add(reading.replace("\\", "/") if backslash else reading)
    return out


def lexically_under(path: str, base: tuple[str, ...] = ("srv", "repos")) -> bool:
    if not path.startswith("/") or "\x00" in path:
        return False
    stack: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if stack:
                stack.pop()
        elif segment not in ("", "."):
            stack.append(segment)
    return tuple(stack[: len(base)]) == base


def is_plain(path: str) -> bool:
    return path.isascii() and not any(c in path for c in "%\\\x00")


@PROPERTY
@given(path=paths)
def test_path_under_cannot_be_escaped(path):
    allow = policy(rule(1, "allow", "fs__read", UNDER_REPOS))
    allowed = decide(allow, "fs__read", {"path": path}).allowed
    if allowed:
        assert all(lexically_under(reading) for reading in readings(path)), path
    if is_plain(path) and path.startswith("/"):
        assert allowed is lexically_under(path), path  # and it is not merely denying all


@PROPERTY
@given(path=paths)
def test_a_deny_under_a_directory_applies_to_every_path_that_may_reach_it(path):
    deny = policy(rule(1, "deny", "fs__read", UNDER_REPOS), rule(2, "allow", "fs__read"))
    decision = decide(deny, "fs__read", {"path": path})
    if any(lexically_under(reading) for reading in readings(path)):
        assert decision.effect is Effect.DENY, path


@PROPERTY
@given(all_paths=st.lists(paths, min_size=1, max_size=4))
def test_every_path_of_a_list_must_stay_under_the_directory(all_paths):
    condition = ConditionSpec("$.paths[*]", "path_under", "/srv/repos")
    allowed = decide(policy(rule(1, "allow", "*", condition)), "x", {"paths": all_paths}).allowed
    if allowed:
        assert all(lexically_under(r) for p in all_paths for r in readings(p))


# --- precedence, plainly ------------------------------------------------------------------------
def test_default_deny():
    decision = decide(policy(), "git__push")
    assert decision == Decision(Effect.DENY, "no rule allows tool 'git__push' for this agent")
    assert not decision.allowed
    assert decide(policy(rule(1, "allow", "fs__*")), "git__push").rule_id is None


def test_deny_beats_require_approval_beats_allow():
    rules = [rule(1, "allow"), rule(2, "require_approval"), rule(3, "deny")]
    assert decide(policy(*rules), "x").rule_id == 3
    assert decide(policy(*rules[:2]), "x").effect is Effect.REQUIRE_APPROVAL
    assert decide(policy(*rules[:2]), "x").rule_id == 2
    assert decide(policy(rules[0]), "x").effect is Effect.ALLOW


def test_the_lowest_id_of_the_winning_effect_fires_whatever_the_order():
    rules = [
        rule(9, "deny", "x", description="nine"),
        rule(4, "deny", "*", description="four"),
        rule(1, "allow"),
    ]
    decision = decide(policy(*rules), "x")
    assert decision.rule_id == 4
    assert decision.reason == "denied by rule 4 (four)"
    assert decide(policy(*rules), "y").rule_id == 4


def test_a_rule_whose_conditions_fail_does_not_apply():
    agent = policy(rule(1, "deny", "git__*", BRANCH_MAIN), rule(2, "allow", "git__*"))
    assert decide(agent, "git__push", {"branch": "main"}).rule_id == 1
    assert decide(agent, "git__push", {"branch": "dev"}).rule_id == 2
    assert decide(agent, "git__push", {}).rule_id == 2  # absent: "branch is main" is false


def test_reasons_name_the_rule_and_its_description():
    assert decide(policy(rule(7, "allow")), "x").reason == "allowed by rule 7"
    agent = policy(rule(7, "require_approval", description="prod writes"))
    assert decide(agent, "x").reason == "approval required by rule 7 (prod writes)"


# --- validity windows ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("valid_from", "valid_until", "expected"),
    [
        (None, None, True),
        (NOW_DT, None, True),  # valid_from <= now
        (NOW_DT + timedelta(microseconds=1), None, False),
        (None, NOW_DT, False),  # now < valid_until
        (None, NOW_DT + timedelta(microseconds=1), True),
        (PAST, FUTURE, True),
        (FUTURE, FUTURE + timedelta(days=1), False),
        (PAST - timedelta(days=1), PAST, False),
    ],
)
def test_validity_window(valid_from, valid_until, expected):
    agent = policy(rule(1, "allow", valid_from=valid_from, valid_until=valid_until))
    assert decide(agent, "x").allowed is expected


def test_a_window_in_another_time_zone_is_the_same_instant():
    berlin = NOW_DT.astimezone(ZoneInfo("Europe/Berlin"))
    agent = policy(rule(1, "allow", valid_from=berlin))
    assert decide(agent, "x").allowed
    assert not decide(agent, "x", now=NOW - 1).allowed


def test_an_expired_deny_no_longer_hides_an_allow():
    agent = policy(rule(1, "deny", valid_until=PAST), rule(2, "allow"))
    assert decide(agent, "x").rule_id == 2
    assert decide(agent, "x", now=PAST.timestamp() - 1).rule_id == 1


# --- targeting ----------------------------------------------------------------------------------
def test_rules_apply_to_their_agent_their_roles_and_everyone():
    tenant = TenantPolicy(
        (
            rule(1, "allow", "own__*", agent_id=1),
            rule(2, "allow", "dev__*", role_id=10),
            rule(3, "allow", "all__*"),
            rule(4, "deny", "dev__drop", role_id=11),
            rule(5, "allow", "other__*", agent_id=2),
        ),
        roles_by_agent={1: frozenset({10}), 2: frozenset({10, 11}), 3: frozenset({12})},
    )
    one, two, three, stranger = (tenant.for_agent(a) for a in (1, 2, 3, 99))
    assert decide(one, "own__x").rule_id == 1
    assert decide(one, "dev__x").rule_id == 2
    assert decide(one, "all__x").rule_id == 3
    assert decide(one, "dev__drop").rule_id == 2  # rule 4 is role 11's
    assert not decide(one, "other__x").allowed  # rule 5 is agent 2's
    assert not decide(two, "own__x").allowed
    assert decide(two, "dev__drop").effect is Effect.DENY
    assert decide(two, "other__x").rule_id == 5
    for agent in (three, stranger):
        assert decide(agent, "all__x").rule_id == 3
        assert not decide(agent, "own__x").allowed
        assert not decide(agent, "dev__x").allowed
    assert tenant.for_agent(1) is one  # indexed once


def test_a_role_deny_beats_an_agent_allow():
    tenant = TenantPolicy(
        (rule(1, "allow", "*", agent_id=1), rule(2, "deny", "git__*", role_id=10)),
        roles_by_agent={1: frozenset({10})},
    )
    assert decide(tenant.for_agent(1), "git__push").rule_id == 2


# --- visible ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([], False),
        ([rule(1, "allow", "x")], True),
        ([rule(1, "allow", "y")], False),
        ([rule(1, "require_approval", "x")], True),
        ([rule(1, "allow", "x", BRANCH_MAIN)], True),
        ([rule(1, "deny", "x"), rule(2, "allow", "x")], False),  # unconditional deny: hidden
        ([rule(1, "deny", "*"), rule(2, "require_approval", "x")], False),
        ([rule(1, "deny", "x", BRANCH_MAIN), rule(2, "allow", "x")], True),  # conditional
        ([rule(1, "deny", "x", BRANCH_MAIN)], False),
        ([rule(1, "deny", "y"), rule(2, "allow", "x")], True),
        ([rule(1, "allow", "x", shadow=True)], False),
        ([rule(1, "deny", "x", shadow=True), rule(2, "allow", "x")], True),
        ([rule(1, "allow", "x", valid_from=FUTURE)], False),
        ([rule(1, "deny", "x", valid_until=PAST), rule(2, "allow", "x")], True),
        ([rule(9, "deny", "x"), rule(1, "allow", "x")], False),
    ],
)
def test_visible(rules, expected):
    assert policy(*rules).visible("tool", "x", now=NOW) is expected


def test_visible_for_another_resource_kind():
    assert not policy(rule(1, "allow")).visible("llm_model", "x", now=NOW)
    assert not decide(policy(rule(1, "allow")), "x").shadow_rule_ids
    assert policy(rule(1, "allow")).decide("llm_model", "x", {}, now=NOW).effect is Effect.DENY


# --- explain ------------------------------------------------------------------------------------
def test_explain_names_the_rules_and_the_failing_condition():
    agent = policy(
        rule(1, "deny", "git__*", BRANCH_MAIN, description="protect main"),
        rule(2, "allow", "git__*", UNDER_REPOS),
        rule(3, "allow", "git__*", valid_until=PAST),
        rule(4, "require_approval", "git__push", shadow=True, description="trial"),
        rule(5, "deny", "fs__*"),
    )
    explanation = agent.explain(
        "tool", "git__push", {"branch": "dev", "path": "/srv/repos/a"}, now=NOW
    )
    assert explanation.decision.rule_id == 2
    assert [trace.rule_id for trace in explanation.rules] == [1, 4, 2, 3]
    assert explanation.lines() == [
        "decision: allow — allowed by rule 2",
        "shadow: rule 4 applies; were shadow rules enforced, the decision would be "
        "require_approval (rule 4)",
        "rule 1 deny: does not apply — protect main",
        '    $.branch equals "main": "dev" → does not hold',
        "rule 4 require_approval [shadow]: applies — trial",
        "rule 2 allow: applies",
        '    $.path path_under "/srv/repos": "/srv/repos/a" → holds',
        "rule 3 allow [outside its validity window]: does not apply",
    ]


def test_explain_a_denial_by_a_failing_allow_condition():
    agent = policy(rule(2, "allow", "git__*", UNDER_REPOS, description="repos only"))
    lines = agent.explain("tool", "git__push", {"path": "/srv/repos/../etc"}, now=NOW).lines()
    assert lines == [
        "decision: deny — no rule allows tool 'git__push' for this agent",
        "rule 2 allow: does not apply — repos only",
        '    $.path path_under "/srv/repos": "/srv/repos/../etc" → does not hold',
    ]
    lines = agent.explain("tool", "git__push", {"path": "/srv/%2e%2e"}, now=NOW).lines()
    assert lines[-1].endswith("does not hold (a value could not be judged safely)")


def test_explain_when_no_glob_matches():
    lines = policy(rule(1, "allow", "fs__*")).explain("tool", "git__push", {}, now=NOW).lines()
    assert lines == [
        "decision: deny — no rule allows tool 'git__push' for this agent",
        "no rule's resource glob matches this name",
    ]


# --- compiling rules ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (RuleSpec(1, "allow", "*"), "effect"),  # a plain string, not an Effect
        (rule(1, "allow", ""), "resource"),
        (rule(1, "allow", "x" * (MAX_GLOB + 1)), "resource"),
        (rule(1, "allow", "*", resource_kind="llm_model"), "resource_kind"),
        (rule(1, "allow", "*", agent_id=1, role_id=2), "agent"),
        (rule(1, "allow", "*", valid_from=NOW_DT, valid_until=NOW_DT), "valid_until"),
        (rule(1, "allow", "*", valid_from=FUTURE, valid_until=PAST), "valid_until"),
        (
            rule(1, "allow", "*", BRANCH_MAIN, ConditionSpec("$.a", "regex", "(")),
            "conditions[1].value",
        ),
        (rule(1, "deny", "*", ConditionSpec("$.a", "is", "x")), "conditions[0].op"),
        (rule(1, "deny", "*", ConditionSpec("a", "equals", "x")), "conditions[0].path"),
        (rule(1, "deny", "*", ConditionSpec("$.a", "equals", 1, "y")), "conditions[0].negate"),
    ],
)
def test_rule_compile_names_the_faulty_field(spec, field):
    with pytest.raises(PolicyError) as caught:
        rule_compile(spec)
    assert caught.value.field == field


def test_a_glob_of_max_length_compiles():
    assert decide(policy(rule(1, "allow", "x" * MAX_GLOB)), "x" * MAX_GLOB).allowed


# --- fail closed --------------------------------------------------------------------------------
BAD_REGEX = ConditionSpec("$.branch", "regex", "(?=main)")


def test_a_broken_deny_applies_to_its_whole_glob():
    tenant = TenantPolicy(
        (
            rule(1, "deny", "git__*", BAD_REGEX, valid_from=FUTURE),
            rule(2, "allow", "*"),
        )
    )
    assert set(tenant.broken) == {1}
    assert "conditions[0].value" in tenant.broken[1]
    agent = tenant.for_agent(1)
    assert decide(agent, "git__push", {"branch": "dev"}).rule_id == 1  # no conditions, no window
    assert decide(agent, "fs__read").rule_id == 2  # only its own glob


def test_a_broken_require_approval_still_requires_approval():
    tenant = TenantPolicy((rule(1, "require_approval", "*", BAD_REGEX), rule(2, "allow", "*")))
    assert decide(tenant.for_agent(1), "x").effect is Effect.REQUIRE_APPROVAL


def test_a_broken_allow_does_nothing():
    tenant = TenantPolicy((rule(1, "allow", "*", BAD_REGEX),))
    assert set(tenant.broken) == {1}
    assert not decide(tenant.for_agent(1), "x", {"branch": "main"}).allowed


def test_a_broken_shadow_rule_does_nothing():
    tenant = TenantPolicy((rule(1, "deny", "*", BAD_REGEX, shadow=True), rule(2, "allow", "*")))
    decision = decide(tenant.for_agent(1), "x")
    assert decision.rule_id == 2
    assert decision.shadow_rule_ids == ()


def test_a_broken_deny_keeps_its_target():
    tenant = TenantPolicy(
        (rule(1, "deny", "*", BAD_REGEX, agent_id=5), rule(2, "allow", "*")),
    )
    assert decide(tenant.for_agent(5), "x").rule_id == 1
    assert decide(tenant.for_agent(6), "x").rule_id == 2


@pytest.mark.parametrize("effect", ["allow", "bogus", "ALLOW"])
def test_a_rule_with_an_unknown_or_unchecked_effect_never_allows(effect):
    # effect as a plain string: rule_compile refuses it; its fallback must not become an
    # unconditional allow.
    spec = RuleSpec(id=1, effect=effect, resource="*", conditions=(BRANCH_MAIN,))
    tenant = TenantPolicy((spec,))
    assert set(tenant.broken) == {1}
    assert fail_closed(spec) is None
    assert not decide(tenant.for_agent(1), "x", {"branch": "dev"}).allowed


def test_a_deny_given_as_a_plain_string_still_fails_closed():
    spec = RuleSpec(id=1, effect="deny", resource="*", conditions=(BAD_REGEX,))
    tenant = TenantPolicy((spec, rule(2, "allow")))
    decision = decide(tenant.for_agent(1), "x")
    assert (decision.effect, decision.rule_id) == (Effect.DENY, 1)


def test_fail_closed():
    spec = rule(1, "deny", "x", BRANCH_MAIN, valid_from=PAST, valid_until=FUTURE)
    assert fail_closed(spec) == replace(spec, conditions=(), valid_from=None, valid_until=None)
    assert fail_closed(rule(1, "allow", "x")) is None
    assert fail_closed(rule(1, "deny", "x", shadow=True)) is None
    assert fail_closed(rule(1, "deny", "")) is None


# --- window edges -------------------------------------------------------------------------------
def test_window_edge_between_is_half_open():
    tenant = TenantPolicy((rule(1, "allow", valid_from=PAST, valid_until=FUTURE), rule(2, "deny")))
    start, end = PAST.timestamp(), FUTURE.timestamp()
    assert tenant.window_edge_between(start - 10, start)  # (since, until]: until counts
    assert not tenant.window_edge_between(start, start + 10)  # since does not
    assert not tenant.window_edge_between(start + 1, end - 1)
    assert tenant.window_edge_between(start + 1, end)
    assert tenant.window_edge_between(0, 2 * end)
    assert not tenant.window_edge_between(end, end + 100)
    assert not TenantPolicy(()).window_edge_between(0, 2 * end)
    broken = TenantPolicy((rule(1, "deny", "*", BAD_REGEX, valid_from=PAST),))
    assert not broken.window_edge_between(start - 1, start)  # it fails closed: no window


INSTANTS = sorted(
    {t.timestamp() + d for t in (PAST, NOW_DT, FUTURE) for d in (-1, 0, 1)} | {0.0, 2 * NOW}
)


@PROPERTY
@given(
    rules=rule_sets(),
    times=st.lists(st.sampled_from(INSTANTS), min_size=2, max_size=2, unique=True).map(sorted),
    name=st.sampled_from(NAMES),
    args=arguments,
)
def test_without_a_window_edge_nothing_an_agent_sees_changes(rules, times, name, args):
    tenant = TenantPolicy(tuple(spec for spec, _ in rules))
    since, until = times
    if tenant.window_edge_between(since, until):
        return
    agent = tenant.for_agent(1)
    assert decide(agent, name, args, now=since) == decide(agent, name, args, now=until)
    assert agent.visible("tool", name, now=since) == agent.visible("tool", name, now=until)
