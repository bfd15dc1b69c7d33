"""Management commands for policy: rule_add, role_create, policy_check, policy_export and
policy_import."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from governance.models import Role, Rule
from governance.services.agents import agent_create
from governance.services.policy import policy_export, role_create, rule_create
from tests.governance.conftest import version

pytestmark = pytest.mark.django_db

ON_MAIN = [{"path": "$.branch", "op": "equals", "value": "main"}]


@pytest.fixture
def agents(tenant):
    return {name: agent_create(tenant=tenant, name=name) for name in ("alice", "bob")}


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def check(*args) -> tuple[int, str]:
    """policy_check's exit status and output."""
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("policy_check", "--tenant", "acme", *args, stdout=out)
    return exited.value.code, out.getvalue()


# --- rule_add -----------------------------------------------------------------------------------
def test_rule_add_for_an_agent_with_conditions(tenant, agents):
    start = version(tenant)
    output = run(
        "rule_add",
        "--tenant=acme",
        "--agent=alice",
        "--effect=deny",
        "--tool=git__push",
        "--when",
        json.dumps(ON_MAIN),
        "--description=no pushes to main",
        "--valid-from=2025-01-01T00:00:00Z",
        "--valid-until=2030-01-01T00:00:00+01:00",
    )
    rule = Rule.objects.get()
    assert output == f"rule {rule.id}: {rule}\n"
    assert output.startswith(f"rule {rule.id}: #{rule.id} deny git__push for alice")
    assert (rule.agent, rule.role, rule.effect, rule.resource) == (
        agents["alice"],
        None,
        "deny",
        "git__push",
    )
    assert rule.conditions == ON_MAIN
    assert rule.description == "no pushes to main"
    assert rule.valid_from.isoformat() == "2025-01-01T00:00:00+00:00"
    assert rule.valid_until.isoformat() == "2029-12-31T23:00:00+00:00"
    assert not rule.shadow
    assert version(tenant) == start + 1


def test_rule_add_for_a_role(tenant, agents):
    role = role_create(tenant=tenant, name="dev")
    run("rule_add", "--tenant=acme", "--role=dev", "--tool=git__*", "--shadow")
    rule = Rule.objects.get()
    assert (rule.role, rule.agent, rule.effect, rule.shadow) == (role, None, "allow", True)


@pytest.mark.parametrize("target", [[], ["--agent=*"]])
def test_rule_add_for_every_agent(tenant, agents, target):
    run("rule_add", "--tenant=acme", *target, "--tool=time__*", "--effect=require_approval")
    rule = Rule.objects.get()
    assert (rule.role, rule.agent, rule.effect, rule.conditions) == (
        None,
        None,
        "require_approval",
        [],
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--when", "[{"], "--when is not JSON: "),
        (["--when", "{'path': 1}"], "--when is not JSON: "),
        (
            ["--when", '[{"path": "$.b", "op": "regex", "value": "(?=x)"}]'],
            "conditions[0].value: not an RE2 regular expression",
        ),
        (["--when", '{"path": "$.b", "op": "equals", "value": 1}'], "conditions are a list"),
        (["--when", '[{"path": "$.b", "op": "like", "value": 1}]'], "conditions[0].op: unknown"),
        (["--agent=nobody"], "no agent 'nobody' in tenant 'acme'"),
        (["--role=nobody"], "no role 'nobody' in tenant 'acme'"),
        (["--role=dev", "--agent=alice"], "not allowed with argument"),
        (["--effect=permit"], "invalid choice: 'permit'"),
        (["--valid-from=2025-01-01T00:00:00"], "argument --valid-from"),  # no time zone
        (["--valid-from=tomorrow"], "argument --valid-from"),
        (["--valid-from=2030-01-01T00:00Z", "--valid-until=2025-01-01T00:00Z"], "must be after"),
    ],
)
def test_rule_add_refuses_bad_input_clearly(tenant, agents, args, message):
    role_create(tenant=tenant, name="dev")
    start = version(tenant)
    with pytest.raises(CommandError) as caught:
        run("rule_add", "--tenant=acme", "--tool=git__*", *args)
    assert message in str(caught.value)
    assert not Rule.objects.exists()
    assert version(tenant) == start


def test_rule_add_needs_a_known_tenant(tenant):
    with pytest.raises(CommandError, match="no tenant 'nope'"):
        run("rule_add", "--tenant=nope", "--tool=x")


# --- role_create --------------------------------------------------------------------------------
def test_role_create(tenant, agents):
    start = version(tenant)
    output = run("role_create", "dev", "--tenant=acme", "--agents", "alice", "bob")
    assert output == "created role acme/dev held by alice, bob\n"
    role = Role.objects.get(tenant=tenant, name="dev")
    assert set(role.agents.all()) == set(agents.values())
    assert version(tenant) == start + 1
    output = run("role_create", "ops", "--tenant=acme", "--description=on call")
    assert output == "created role acme/ops held by nobody\n"
    assert Role.objects.get(name="ops").description == "on call"


def test_role_create_refuses_a_duplicate_and_unknown_agents(tenant, agents):
    run("role_create", "dev", "--tenant=acme")
    start = version(tenant)
    with pytest.raises(CommandError, match="role 'dev' exists already in tenant 'acme'"):
        run("role_create", "dev", "--tenant=acme")
    with pytest.raises(CommandError, match="no agent 'nobody' in tenant 'acme'"):
        run("role_create", "ops", "--tenant=acme", "--agents", "alice", "nobody")
    assert list(Role.objects.values_list("name", flat=True)) == ["dev"]
    assert version(tenant) == start


# --- policy_check -------------------------------------------------------------------------------
@pytest.fixture
def rules(tenant, agents):
    return {
        "allow": rule_create(
            tenant=tenant, agent=agents["alice"], effect="allow", resource="git__*"
        ),
        "deny": rule_create(
            tenant=tenant,
            effect="deny",
            resource="git__push",
            conditions=ON_MAIN,
            description="no pushes to main",
        ),
        "approval": rule_create(tenant=tenant, effect="require_approval", resource="git__reset"),
    }


def test_policy_check_exit_codes_and_explanation(rules):
    allow, deny = rules["allow"].id, rules["deny"].id
    code, output = check("--agent=alice", "--tool=git__push", '--args={"branch": "dev"}')
    assert code == 0
    assert output.splitlines() == [
        f"decision: allow — allowed by rule {allow}",
        f"rule {deny} deny: does not apply — no pushes to main",
        '    $.branch equals "main": "dev" → does not hold',
        f"rule {allow} allow: applies",
    ]
    code, output = check("--agent=alice", "--tool=git__push", '--args={"branch": "main"}')
    assert code == 1
    assert output.splitlines()[0] == f"decision: deny — denied by rule {deny} (no pushes to main)"
    code, output = check("--agent=alice", "--tool=git__reset")
    assert code == 2
    assert output.startswith(
        f"decision: require_approval — approval required by rule {rules['approval'].id}\n"
    )
    code, output = check("--agent=bob", "--tool=git__status")
    assert code == 1
    assert output.splitlines()[0] == (
        "decision: deny — no rule allows tool 'git__status' for this agent"
    )


def test_policy_check_records_nothing(rules, tenant):
    start = version(tenant)
    check("--agent=alice", "--tool=git__push")
    assert version(tenant) == start


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent=alice", "--tool=x", "--args={"], "--args is not JSON"),
        (["--agent=alice", "--tool=x", "--args=[1]"], "--args must be a JSON object"),
        (["--agent=alice", "--tool=x", "--args=null"], "--args must be a JSON object"),
        (["--agent=nobody", "--tool=x"], "no agent 'nobody' in tenant 'acme'"),
    ],
)
def test_policy_check_refuses_bad_input(rules, args, message):
    with pytest.raises(CommandError) as caught:
        call_command("policy_check", "--tenant=acme", *args, stdout=io.StringIO())
    assert message in str(caught.value)


# --- policy_export / policy_import --------------------------------------------------------------
def test_policy_export_to_stdout_and_to_a_file(rules, tenant, tmp_path):
    expected = policy_export(tenant=tenant)
    assert run("policy_export", "--tenant=acme") == expected
    target = tmp_path / "policy.yaml"
    assert run("policy_export", "--tenant=acme", "-o", str(target)) == ""
    assert target.read_text(encoding="utf-8") == expected


def test_policy_import_from_a_file(rules, tenant, agents, tmp_path):
    path = tmp_path / "policy.yaml"
    run("policy_export", "--tenant=acme", "--output", str(path))
    exported = path.read_text(encoding="utf-8")
    path.write_text(
        exported.replace("everyone:\n", "everyone:\n- effect: allow\n  resource: time__*\n"),
        encoding="utf-8",
    )
    start = version(tenant)
    output = run("policy_import", str(path), "--tenant=acme")
    assert output == (
        "imported: roles: 0 created, 0 updated, 0 deleted; rules: 1 created, 0 updated, 0 deleted\n"
    )
    assert Rule.objects.filter(resource="time__*", role=None, agent=None).exists()
    assert version(tenant) == start + 1


def test_policy_import_dry_run(rules, tenant, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("format: 1\n", encoding="utf-8")
    before = (policy_export(tenant=tenant), version(tenant))
    assert run("policy_import", str(path), "--tenant=acme", "--dry-run") == (
        "valid; nothing changed (dry run)\n"
    )
    assert (policy_export(tenant=tenant), version(tenant)) == before


def test_policy_import_of_an_invalid_file_is_a_clear_error(rules, tenant, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(
        "roles:\n  - name: dev\n    agents: [nobody]\n"
        "    rules:\n      - {effect: allow, resource: x, conditions: [{path: a, op: equals, "
        "value: 1}]}\n",
        encoding="utf-8",
    )
    before = (policy_export(tenant=tenant), version(tenant))
    with pytest.raises(CommandError) as caught:
        run("policy_import", str(path), "--tenant=acme")
    assert str(caught.value).splitlines() == [
        f"{path} is not a valid policy; nothing changed:",
        "roles[0].agents[0]: no agent 'nobody' in this tenant",
        'roles[0].rules[0].conditions[0].path: a JSON path starting with "$", e.g. "$.repo_path"',
    ]
    assert (policy_export(tenant=tenant), version(tenant)) == before


def test_policy_import_of_bad_yaml_names_the_line(tenant, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("everyone:\n  - effect: allow\n   resource: x\n", encoding="utf-8")
    with pytest.raises(CommandError, match=r"line 3, column 4: not valid YAML"):
        run("policy_import", str(path), "--tenant=acme")


def test_policy_import_of_a_missing_file(tenant, tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(CommandError, match=f"cannot read {missing}: No such file or directory"):
        run("policy_import", str(missing), "--tenant=acme")


def test_policy_import_from_stdin(tenant, agents, monkeypatch):
    monkeypatch.setattr(
        "sys.stdin", io.StringIO("agents:\n  bob:\n    - {effect: deny, resource: '*'}\n")
    )
    run("policy_import", "-", "--tenant=acme")
    assert Rule.objects.get().agent == agents["bob"]
