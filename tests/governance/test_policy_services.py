"""Policy services and selectors: rule validation, roles, versions, and policy as YAML."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from governance import selectors
from governance.engine.policy import Effect
from governance.models import Role, Rule
from governance.services import policy as policy_services
from governance.services.agents import agent_create, tenant_create
from governance.services.policy import (
    PolicyImportError,
    policy_export,
    policy_import,
    role_create,
    rule_create,
    rule_delete,
)
from tests.governance.conftest import version

pytestmark = pytest.mark.django_db

UNDER_REPOS = [{"path": "$.repo_path", "op": "path_under", "value": "/srv/repos"}]
ON_MAIN = [{"path": "$.branch", "op": "in", "value": ["main", "master"]}]
FROM = datetime(2025, 1, 1, tzinfo=UTC)
UNTIL = datetime(2030, 1, 1, 12, 30, tzinfo=UTC)


@pytest.fixture
def agents(tenant):
    return {name: agent_create(tenant=tenant, name=name) for name in ("alice", "bob", "carol")}


@pytest.fixture
def other():
    """Another tenant with an agent, a role and a rule, which no import here may touch."""
    other = tenant_create(slug="other")
    mallory = agent_create(tenant=other, name="mallory")
    role = role_create(tenant=other, name="developer", agents=[mallory])
    rule_create(tenant=other, role=role, effect="allow", resource="*")
    return other


@pytest.fixture
def populated(tenant, agents, other):
    """Every kind of rule: role, agent and tenant-wide rules, conditions (negated too), windows,
    shadow, descriptions with non-ASCII text."""
    developer = role_create(
        tenant=tenant,
        name="developer",
        description="writes code",
        agents=[agents["bob"], agents["alice"]],
    )
    release = role_create(tenant=tenant, name="release-bot", agents=[agents["carol"]])
    role_create(tenant=tenant, name="empty")
    rules = [
        rule_create(
            tenant=tenant, role=developer, effect="allow", resource="git__*", conditions=UNDER_REPOS
        ),
        rule_create(
            tenant=tenant,
            role=developer,
            effect="deny",
            resource="git__push",
            conditions=ON_MAIN,
            description="keine Pushes auf main — ✓",
        ),
        rule_create(
            tenant=tenant,
            role=release,
            effect="require_approval",
            resource="*__delete_*",
            valid_from=FROM,
            valid_until=UNTIL,
        ),
        rule_create(tenant=tenant, effect="allow", resource="time__*"),
        rule_create(tenant=tenant, effect="deny", resource="git__push", shadow=True),
        rule_create(
            tenant=tenant,
            agent=agents["alice"],
            effect="allow",
            resource="fetch__fetch",
            conditions=[
                {"path": "$.url", "op": "host_in", "value": ["docs.python.org"]},
                {"path": "$.max_length", "op": "range", "value": {"max": 20000}, "negate": True},
                {"path": '$["odd key"][*]', "op": "regex", "value": "^[a-z]+$"},
            ],
        ),
    ]
    return {"rules": rules, "developer": developer, "release": release}


def snapshot(tenant):
    """Everything an import may change, and the version."""
    return (
        policy_export(tenant=tenant),
        version(tenant),
        sorted(Rule.objects.filter(tenant=tenant).values_list("id", "updated_at")),
        sorted(Role.objects.filter(tenant=tenant).values_list("id", "name", "description")),
    )


def import_errors(tenant, text) -> list[tuple[str, str]]:
    with pytest.raises(PolicyImportError) as caught:
        policy_import(tenant=tenant, text=text)
    return caught.value.errors


def decide(tenant, agent, name, arguments=None):
    policy = selectors.tenant_policy_get(tenant_id=tenant.id).for_agent(agent.id)
    return policy.decide("tool", name, arguments or {}, now=time.time())


# --- versions -----------------------------------------------------------------------------------
def test_every_policy_write_bumps_the_tenant_version_once(tenant, agents):
    start = version(tenant)
    role = role_create(tenant=tenant, name="dev", agents=[agents["alice"]])
    assert version(tenant) == start + 1
    rule = rule_create(tenant=tenant, role=role, effect="allow", resource="*")
    assert version(tenant) == start + 2
    rule_delete(rule=rule)
    assert version(tenant) == start + 3
    assert not Rule.objects.filter(id=rule.id).exists()
    policy_import(tenant=tenant, text="format: 1\n")
    assert version(tenant) == start + 4


def test_a_refused_write_does_not_bump_the_version(tenant, agents, other):
    role_create(tenant=tenant, name="dev")
    start, other_start = version(tenant), version(other)
    with pytest.raises(ValidationError):
        rule_create(tenant=tenant, effect="allow", resource="")
    with pytest.raises(IntegrityError):
        role_create(tenant=tenant, name="dev")
    with pytest.raises(PolicyImportError):
        policy_import(tenant=tenant, text="roles: [{name: x, agents: [nobody]}]")
    policy_import(tenant=tenant, text="format: 1\n", dry_run=True)
    assert version(tenant) == start
    assert version(other) == other_start
    assert list(Role.objects.filter(tenant=tenant).values_list("name", flat=True)) == ["dev"]


# --- rule_create validation ---------------------------------------------------------------------
def test_rule_create_stores_a_valid_rule(tenant, agents):
    rule = rule_create(
        tenant=tenant,
        agent=agents["alice"],
        effect="require_approval",
        resource="git__*",
        conditions=ON_MAIN,
        shadow=True,
        valid_from=FROM,
        valid_until=UNTIL,
        description="d",
    )
    stored = Rule.objects.get(id=rule.id)
    assert (stored.agent, stored.role, stored.effect, stored.resource) == (
        agents["alice"],
        None,
        "require_approval",
        "git__*",
    )
    assert (stored.conditions, stored.shadow, stored.valid_from, stored.valid_until) == (
        ON_MAIN,
        True,
        FROM,
        UNTIL,
    )
    spec = selectors.rule_spec(stored)
    assert spec.effect is Effect.REQUIRE_APPROVAL
    assert spec.agent_id == agents["alice"].id
    assert spec.conditions[0].value == ["main", "master"]


def _bad_rules(tenant, agents, role, foreign_role, foreign_agent):
    return [
        (
            {"conditions": [{"path": "$.b", "op": "regex", "value": "(?=main)"}]},
            "conditions",
            "conditions[0].value: not an RE2 regular expression",
        ),
        (
            {"conditions": [*ON_MAIN, {"path": "$.b", "op": "matches", "value": "x"}]},
            "conditions",
            "conditions[1].op: unknown operator 'matches'",
        ),
        (
            {"conditions": [{"path": "$.b", "op": "equals"}]},
            "conditions",
            "conditions[0].value: required",
        ),
        (
            {"conditions": [{"path": "b", "op": "equals", "value": 1}]},
            "conditions",
            "conditions[0].path: ",
        ),
        (
            {"conditions": [{"path": "$.n", "op": "range", "value": {"min": 5, "max": 1}}]},
            "conditions",
            "conditions[0].value: range takes",
        ),
        ({"conditions": {"path": "$.b"}}, "conditions", "conditions are a list of objects"),
        ({"effect": "maybe"}, "effect", "one of deny, require_approval, allow"),
        ({"resource": ""}, "resource", "a glob of 1 to 200 characters"),
        ({"resource": "x" * 201}, "resource", "a glob of 1 to 200 characters"),
        ({"resource_kind": "llm_model"}, "resource_kind", "one of tool"),
        ({"role": role, "agent": agents["alice"]}, "agent", "a rule targets one agent or one role"),
        ({"valid_from": UNTIL, "valid_until": FROM}, "valid_until", "must be after valid_from"),
        ({"valid_from": FROM, "valid_until": FROM}, "valid_until", "must be after valid_from"),
        ({"role": foreign_role}, "role", "this role belongs to another tenant"),
        ({"agent": foreign_agent}, "agent", "this agent belongs to another tenant"),
    ]


def test_rule_create_errors_map_to_model_fields(tenant, agents, other):
    role = role_create(tenant=tenant, name="dev")
    foreign_role = Role.objects.get(tenant=other)
    foreign_agent = other.agents.get()
    start = version(tenant)
    for fields, field, message in _bad_rules(tenant, agents, role, foreign_role, foreign_agent):
        with pytest.raises(ValidationError) as caught:
            rule_create(tenant=tenant, **{"effect": "allow", "resource": "*", **fields})
        errors = caught.value.message_dict
        assert list(errors) == [field], fields
        assert errors[field][0].startswith(message), (fields, errors)
    assert not Rule.objects.filter(tenant=tenant).exists()
    assert version(tenant) == start


# --- roles --------------------------------------------------------------------------------------
def test_role_create_gives_the_role_to_its_agents(tenant, agents):
    role = role_create(
        tenant=tenant, name="dev", description="d", agents=[agents["alice"], agents["bob"]]
    )
    assert set(role.agents.all()) == {agents["alice"], agents["bob"]}
    rule_create(tenant=tenant, role=role, effect="allow", resource="git__*")
    assert decide(tenant, agents["alice"], "git__push").allowed
    assert decide(tenant, agents["bob"], "git__push").allowed
    assert not decide(tenant, agents["carol"], "git__push").allowed


# --- export -------------------------------------------------------------------------------------
def test_export_writes_roles_everyone_and_agents(tenant, agents, populated):
    ids = [rule.id for rule in populated["rules"]]
    assert yaml.safe_load(policy_export(tenant=tenant)) == {
        "format": 1,
        "tenant": "acme",
        "roles": [
            {
                "name": "developer",
                "description": "writes code",
                "agents": ["alice", "bob"],
                "rules": [
                    {
                        "id": ids[0],
                        "effect": "allow",
                        "resource": "git__*",
                        "conditions": UNDER_REPOS,
                    },
                    {
                        "id": ids[1],
                        "effect": "deny",
                        "resource": "git__push",
                        "conditions": ON_MAIN,
                        "description": "keine Pushes auf main — ✓",
                    },
                ],
            },
            {"name": "empty", "agents": [], "rules": []},
            {
                "name": "release-bot",
                "agents": ["carol"],
                "rules": [
                    {
                        "id": ids[2],
                        "effect": "require_approval",
                        "resource": "*__delete_*",
                        "valid_from": FROM,
                        "valid_until": UNTIL,
                    }
                ],
            },
        ],
        "everyone": [
            {"id": ids[3], "effect": "allow", "resource": "time__*"},
            {"id": ids[4], "effect": "deny", "resource": "git__push", "shadow": True},
        ],
        "agents": {
            "alice": [
                {
                    "id": ids[5],
                    "effect": "allow",
                    "resource": "fetch__fetch",
                    "conditions": populated["rules"][5].conditions,
                }
            ]
        },
    }


def test_export_of_an_empty_tenant(tenant):
    assert yaml.safe_load(policy_export(tenant=tenant)) == {
        "format": 1,
        "tenant": "acme",
        "roles": [],
        "everyone": [],
        "agents": {},
    }


# --- import: round trips ------------------------------------------------------------------------
def test_export_import_export_is_identical_and_keeps_rule_ids(tenant, populated):
    ids = sorted(Rule.objects.filter(tenant=tenant).values_list("id", flat=True))
    start = version(tenant)
    text = policy_export(tenant=tenant)
    summary = policy_import(tenant=tenant, text=text)
    assert policy_export(tenant=tenant) == text
    assert sorted(Rule.objects.filter(tenant=tenant).values_list("id", flat=True)) == ids
    assert str(summary) == (
        "roles: 0 created, 0 updated, 0 deleted; rules: 0 created, 0 updated, 0 deleted"
    )
    assert version(tenant) == start + 1


def test_import_restores_an_exported_policy(tenant, agents, populated):
    text = policy_export(tenant=tenant)
    ids = sorted(Rule.objects.filter(tenant=tenant).values_list("id", flat=True))
    # drift: a new role, a new rule, a changed rule, a changed membership and description
    role_create(tenant=tenant, name="intern", agents=[agents["carol"]])
    rule_create(tenant=tenant, effect="allow", resource="*")
    Rule.objects.filter(id=ids[0]).update(resource="git__status", shadow=True)
    populated["developer"].agents.remove(agents["bob"])
    Role.objects.filter(name="release-bot").update(description="changed")
    summary = policy_import(tenant=tenant, text=text)
    assert policy_export(tenant=tenant) == text
    assert sorted(Rule.objects.filter(tenant=tenant).values_list("id", flat=True)) == ids
    assert summary.roles == {"created": 0, "updated": 1, "deleted": 1}
    assert summary.rules == {"created": 0, "updated": 1, "deleted": 1}


def test_import_applies_the_document_to_decisions(tenant, agents):
    policy_import(
        tenant=tenant,
        text="""
roles:
  - name: dev
    agents: [alice]
    rules:
      - effect: allow
        resource: "git__*"
        conditions:
          - {path: $.repo_path, op: path_under, value: /srv/repos}
everyone:
  - effect: require_approval
    resource: "*__delete_*"
agents:
  bob:
    - {effect: allow, resource: "time__*"}
""",
    )
    alice, bob = agents["alice"], agents["bob"]
    assert decide(tenant, alice, "git__status", {"repo_path": "/srv/repos/app"}).allowed
    assert not decide(tenant, alice, "git__status", {"repo_path": "/srv/repos/../etc"}).allowed
    assert not decide(tenant, bob, "git__status", {"repo_path": "/srv/repos/app"}).allowed
    assert decide(tenant, bob, "time__now").allowed
    assert decide(tenant, bob, "files__delete_file").effect is Effect.REQUIRE_APPROVAL


def test_import_creates_rules_without_id_and_deletes_what_it_leaves_out(
    tenant, agents, populated, other
):
    other_before = policy_export(tenant=other)
    kept = populated["rules"][3]
    summary = policy_import(
        tenant=tenant,
        text=f"""
roles:
  - name: developer
    description: writes code
    agents: [alice]
    rules:
      - {{effect: allow, resource: "git__status"}}
everyone:
  - {{id: {kept.id}, effect: allow, resource: "time__*"}}
agents:
  carol:
    - {{effect: deny, resource: "*"}}
""",
    )
    assert summary.roles == {"created": 0, "updated": 0, "deleted": 2}
    assert summary.rules == {"created": 2, "updated": 0, "deleted": 5}
    assert set(Role.objects.filter(tenant=tenant).values_list("name", flat=True)) == {"developer"}
    developer = Role.objects.get(tenant=tenant, name="developer")
    assert developer.id == populated["developer"].id
    assert list(developer.agents.all()) == [agents["alice"]]
    rules = Rule.objects.filter(tenant=tenant).order_by("id")
    assert [(r.role, r.agent, r.effect, r.resource) for r in rules] == [
        (None, None, "allow", "time__*"),
        (developer, None, "allow", "git__status"),
        (None, agents["carol"], "deny", "*"),
    ]
    assert rules[0].id == kept.id
    assert rules[1].id > max(r.id for r in populated["rules"])
    assert policy_export(tenant=other) == other_before


def test_renaming_a_role_keeps_its_rules(tenant, agents, populated):
    text = policy_export(tenant=tenant).replace("name: developer", "name: developers")
    role_rule_ids = [r.id for r in populated["rules"][:2]]
    summary = policy_import(tenant=tenant, text=text)
    assert summary.roles == {"created": 1, "updated": 0, "deleted": 1}
    assert summary.rules == {"created": 0, "updated": 2, "deleted": 0}
    renamed = Role.objects.get(tenant=tenant, name="developers")
    assert sorted(renamed.rules.values_list("id", flat=True)) == role_rule_ids
    assert set(renamed.agents.all()) == {agents["alice"], agents["bob"]}
    assert not Role.objects.filter(tenant=tenant, name="developer").exists()
    assert policy_export(tenant=tenant) == text


def test_moving_a_rule_to_another_target_keeps_its_id(tenant, agents, populated):
    moved = populated["rules"][1]
    document = yaml.safe_load(policy_export(tenant=tenant))
    rule_doc = document["roles"][0]["rules"].pop(1)
    document["agents"]["bob"] = [rule_doc]
    policy_import(tenant=tenant, text=yaml.safe_dump(document, allow_unicode=True))
    stored = Rule.objects.get(id=moved.id)
    assert (stored.role, stored.agent) == (None, agents["bob"])
    assert stored.description == "keine Pushes auf main — ✓"


def test_import_accepts_json_with_iso_dates(tenant, agents):
    policy_import(
        tenant=tenant,
        text='{"everyone": [{"effect": "allow", "resource": "x", '
        '"valid_from": "2025-01-01T00:00:00Z", "valid_until": "2030-01-01T12:30:00+00:00"}]}',
    )
    rule = Rule.objects.get(tenant=tenant)
    assert (rule.valid_from, rule.valid_until) == (FROM, UNTIL)


# --- import: errors -----------------------------------------------------------------------------
def test_import_reports_every_problem_with_its_location(tenant, agents, populated):
    first = populated["rules"][0].id
    text = f"""
tenant: acme
roles:
  - name: dev
    agents: [alice, nobody]
    rules:
      - {{id: {first}, effect: allow, resource: "git__*"}}
      - effect: deny
        resource: git__push
        conditions:
          - {{path: $.branch, op: regex, value: "(?=main)"}}
  - name: dev
everyone:
  - {{id: 999999, effect: allow, resource: x}}
  - {{id: {first}, effect: allow, resource: y}}
  - effect: deny
    resource: z
    conditions: [{{path: $.a, op: equals}}]
  - effect: allow
    resource: w
    valid_from: 2030-01-01T00:00:00Z
    valid_until: 2025-01-01T00:00:00Z
agents:
  ghost:
    - {{effect: allow, resource: x}}
  alice:
    - effect: allow
      resource: x
      conditions: [{{path: $.url, op: host_in, value: ["0x7f.1"]}}]
"""
    before = snapshot(tenant)
    errors = import_errors(tenant, text)
    assert [where for where, _ in errors] == [
        "roles[0].agents[1]",
        "roles[1].name",
        "agents.ghost",
        "roles[0].rules[1].conditions[0].value",
        "everyone[0].id",
        "everyone[1].id",
        "everyone[2].conditions[0].value",
        "everyone[3].valid_until",
        "agents.alice[0].conditions[0].value",
    ]
    messages = dict(errors)
    assert messages["roles[0].agents[1]"] == "no agent 'nobody' in this tenant"
    assert messages["roles[1].name"] == "role 'dev' appears twice"
    assert messages["agents.ghost"] == "no agent 'ghost' in this tenant"
    assert messages["roles[0].rules[1].conditions[0].value"].startswith(
        "not an RE2 regular expression"
    )
    assert messages["everyone[0].id"].startswith("no rule 999999 in this tenant")
    assert messages["everyone[1].id"] == f"rule id {first} appears twice"
    assert messages["everyone[2].conditions[0].value"] == "required"
    assert messages["everyone[3].valid_until"] == "must be after valid_from"
    assert "'0x7f.1' is not a host name" in messages["agents.alice[0].conditions[0].value"]
    assert snapshot(tenant) == before


def test_import_reports_every_schema_problem_with_its_location(tenant, agents):
    text = """
colour: red
roles:
  - name: dev
    members: [alice]
    rules:
      - {effect: allow, resource: x, when: []}
everyone:
  - {effect: permit, resource: x}
  - effect: allow
    resource: x
    valid_from: 2025-01-01 00:00:00
  - {effect: allow, resource: x, valid_until: "2025-01-01T00:00:00"}
  - {effect: allow, resource: "", shadow: "yes", id: "5"}
agents:
  alice:
    - {effect: allow}
"""
    errors = import_errors(tenant, text)
    assert sorted(errors) == sorted(
        [
            ("colour", "Extra inputs are not permitted"),
            ("roles[0].members", "Extra inputs are not permitted"),
            ("roles[0].rules[0].when", "Extra inputs are not permitted"),
            ("everyone[0].effect", "Input should be 'allow', 'deny' or 'require_approval'"),
            ("everyone[1].valid_from", "Input should have timezone info"),
            ("everyone[2].valid_until", "Input should have timezone info"),
            ("everyone[3].resource", "String should have at least 1 character"),
            ("everyone[3].shadow", "Input should be a valid boolean"),
            ("everyone[3].id", "Input should be a valid integer"),
            ("agents.alice[0].resource", "Field required"),
        ]
    )


def test_bad_yaml_is_reported_with_its_line(tenant):
    text = "roles:\n  - name: a\n    rules:\n  - effect: allow\n   resource: x\n"
    [(where, message)] = import_errors(tenant, text)
    assert where == "line 5, column 4"
    assert message.startswith("not valid YAML: ")
    [(where, _)] = import_errors(tenant, "everyone: [}")
    assert where == "line 1, column 12"


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text", "42"])
def test_a_document_that_is_not_a_mapping(tenant, text):
    [(where, _)] = import_errors(tenant, text)
    assert where == "document"


def test_a_document_for_another_tenant_is_refused(tenant, other):
    [(where, message)] = import_errors(tenant, "tenant: other\n")
    assert where == "tenant"
    assert "'other'" in message
    errors = import_errors(tenant, policy_export(tenant=other))
    assert [where for where, _ in errors] == [
        "tenant",
        "roles[0].agents[0]",
        "roles[0].rules[0].id",
    ]


def test_a_failing_import_changes_nothing(tenant, agents, populated):
    document = yaml.safe_load(policy_export(tenant=tenant))
    document["roles"].append({"name": "new", "agents": ["alice"]})
    document["everyone"] = []  # would delete two rules
    document["roles"][0]["rules"][0]["resource"] = "changed"
    document["agents"]["alice"][0]["conditions"][2]["value"] = "(a)\\1"  # the one error
    before = snapshot(tenant)
    errors = import_errors(tenant, yaml.safe_dump(document))
    assert [where for where, _ in errors] == ["agents.alice[0].conditions[2].value"]
    assert snapshot(tenant) == before


def test_a_write_that_fails_halfway_rolls_back_everything(tenant, agents, populated, monkeypatch):
    before = snapshot(tenant)

    def fail(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(policy_services, "tenant_version_bump", fail)
    with pytest.raises(RuntimeError):
        policy_import(tenant=tenant, text="roles: [{name: fresh, agents: [alice]}]\n")
    assert snapshot(tenant) == before


# --- import: dry run ----------------------------------------------------------------------------
def test_a_dry_run_counts_the_changes_and_keeps_none(tenant, agents, populated):
    text = """
roles:
  - name: developer
    agents: [carol]
    rules:
      - {effect: allow, resource: "git__*"}
  - name: fresh
"""
    before = snapshot(tenant)
    dry = policy_import(tenant=tenant, text=text, dry_run=True)
    assert snapshot(tenant) == before
    assert dry.roles == {"created": 1, "updated": 1, "deleted": 2}
    assert dry.rules == {"created": 1, "updated": 0, "deleted": 6}
    real = policy_import(tenant=tenant, text=text)
    assert (real.roles, real.rules) == (dry.roles, dry.rules)
    assert version(tenant) == before[1] + 1


def test_a_dry_run_of_an_invalid_document_reports_its_errors(tenant, agents, populated):
    before = snapshot(tenant)
    with pytest.raises(PolicyImportError) as caught:
        policy_import(tenant=tenant, text="agents: {nobody: []}", dry_run=True)
    assert caught.value.errors == [("agents.nobody", "no agent 'nobody' in this tenant")]
    assert str(caught.value) == "agents.nobody: no agent 'nobody' in this tenant"
    assert snapshot(tenant) == before


# --- selectors ----------------------------------------------------------------------------------
def test_tenant_policy_get_reads_roles_and_targets(tenant, agents, populated):
    policy = selectors.tenant_policy_get(tenant_id=tenant.id)
    developer, release = populated["developer"].id, populated["release"].id
    assert dict(policy.roles_by_agent) == {
        agents["alice"].id: frozenset({developer}),
        agents["bob"].id: frozenset({developer}),
        agents["carol"].id: frozenset({release}),
    }
    assert policy.broken == {}
    ids = [rule.id for rule in populated["rules"]]
    now = time.time()
    alice = policy.for_agent(agents["alice"].id)
    push = alice.decide(
        "tool", "git__push", {"branch": "main", "repo_path": "/srv/repos/a"}, now=now
    )
    assert (push.effect, push.rule_id, push.shadow_rule_ids) == (Effect.DENY, ids[1], (ids[4],))
    carol = policy.for_agent(agents["carol"].id)
    assert carol.decide("tool", "fs__delete_x", {}, now=now).rule_id == ids[2]
    assert not carol.decide("tool", "git__status", {"repo_path": "/srv/repos/a"}, now=now).allowed


def test_a_rule_corrupted_in_the_database_fails_closed(tenant, agents):
    deny = rule_create(tenant=tenant, effect="deny", resource="git__*", conditions=ON_MAIN)
    allow = rule_create(tenant=tenant, effect="allow", resource="*", conditions=ON_MAIN)
    approval = rule_create(tenant=tenant, effect="require_approval", resource="fs__*")
    bogus = rule_create(tenant=tenant, effect="deny", resource="net__*")
    # edited behind the application's back
    Rule.objects.filter(id=deny.id).update(conditions={"not": "a list"})
    Rule.objects.filter(id=allow.id).update(
        conditions=[{"path": "$.branch", "op": "regex", "value": "(?!main)"}]
    )
    Rule.objects.filter(id=approval.id).update(conditions=[{"path": "$.a", "op": "nope"}])
    Rule.objects.filter(id=bogus.id).update(effect="maybe")
    policy = selectors.tenant_policy_get(tenant_id=tenant.id)
    assert set(policy.broken) == {deny.id, allow.id, approval.id, bogus.id}
    agent = policy.for_agent(agents["alice"].id)
    now = time.time()
    assert agent.decide("tool", "git__push", {"branch": "dev"}, now=now).rule_id == deny.id
    assert not agent.decide("tool", "x", {"branch": "main"}, now=now).allowed
    assert agent.decide("tool", "fs__read", {}, now=now).rule_id == approval.id
    assert agent.decide("tool", "net__get", {}, now=now).rule_id is None  # unknown effect


def test_policy_explain(tenant, agents, populated):
    explanation = selectors.policy_explain(
        tenant=tenant,
        agent=agents["bob"],
        name="git__push",
        arguments={"branch": "dev", "repo_path": "/srv/repos/a"},
    )
    ids = [rule.id for rule in populated["rules"]]
    assert explanation.decision.rule_id == ids[0]
    lines = explanation.lines()
    assert lines[0] == f"decision: allow — allowed by rule {ids[0]}"
    assert f"rule {ids[1]} deny: does not apply — keine Pushes auf main — ✓" in lines
    assert f"rule {ids[4]} deny [shadow]: applies" in lines


def test_tenant_state_carries_the_policy(tenant, agents, populated):
    state = selectors.tenant_state_get(tenant_id=tenant.id)
    assert state.version == version(tenant)
    assert len(state.policy.rules) == len(populated["rules"])
    assert state.policy.for_agent(agents["alice"].id).visible("tool", "time__now", now=time.time())


@pytest.mark.parametrize("text", ["", "  \n", "# nothing but a comment\n"])
def test_an_empty_document_is_refused_rather_than_deleting_everything(tenant, text):
    rule_create(tenant=tenant, effect="allow", resource="*")
    with pytest.raises(PolicyImportError) as refused:
        policy_import(tenant=tenant, text=text)
    [(where, message)] = refused.value.errors
    assert where == "document"
    assert "format: 1" in message
    assert Rule.objects.filter(tenant=tenant).count() == 1


def test_an_unknown_format_is_refused(tenant):
    with pytest.raises(PolicyImportError) as refused:
        policy_import(tenant=tenant, text="format: 2\n")
    assert [where for where, _ in refused.value.errors] == ["format"]


def test_stored_rules_edited_behind_the_application_fail_closed(tenant, alice):
    """SQL edits the application never validated: unreadable conditions on a deny make it
    apply to its whole glob, on an allow make it do nothing; an unknown effect does nothing."""
    deny = rule_create(tenant=tenant, effect="deny", resource="git__push", conditions=ON_MAIN)
    allow = rule_create(tenant=tenant, effect="allow", resource="git__*")
    odd = rule_create(tenant=tenant, effect="allow", resource="time__*")
    Rule.objects.filter(id=deny.id).update(conditions={"not": "a list"})
    Rule.objects.filter(id=allow.id).update(conditions=[{"path": "$.x", "op": "nope", "value": 1}])
    Rule.objects.filter(id=odd.id).update(effect="maybe")

    policy = selectors.tenant_policy_get(tenant_id=tenant.id)
    assert set(policy.broken) == {deny.id, allow.id, odd.id}
    assert policy.broken[deny.id].startswith("conditions: ")
    assert policy.broken[allow.id].startswith("conditions[0].op: unknown operator")
    assert policy.broken[odd.id].startswith("effect: ")
    decide = policy.for_agent(alice.id).decide
    pushed = decide("tool", "git__push", {"branch": "dev"}, now=time.time())
    assert (pushed.effect, pushed.rule_id) == (Effect.DENY, deny.id)
    assert decide("tool", "git__status", {}, now=time.time()).rule_id is None
    assert decide("tool", "time__now", {}, now=time.time()).rule_id is None
