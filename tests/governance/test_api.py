import base64
import json

import pytest
import yaml
from rest_framework.test import APIClient

from audit.models import AuditRecord
from governance.models import Membership, Rule
from governance.services.agents import agent_create, tenant_create
from governance.services.policy import policy_export, role_create, rule_create
from tests.governance.conftest import version

pytestmark = pytest.mark.django_db

CHECK = "/api/v1/tenants/acme/policy/check"
POLICY = "/api/v1/tenants/acme/policy"
ON_MAIN = [{"path": "$.branch", "op": "equals", "value": "main"}]


@pytest.fixture
def rules(tenant, alice):
    """alice: git__* allowed, pushes to main denied, resets need approval, and a shadow rule
    that would deny git__status."""
    return {
        "allow": rule_create(tenant=tenant, agent=alice, effect="allow", resource="git__*"),
        "deny": rule_create(
            tenant=tenant,
            agent=alice,
            effect="deny",
            resource="git__push",
            conditions=ON_MAIN,
            description="no pushes to main",
        ),
        "approval": rule_create(tenant=tenant, effect="require_approval", resource="git__reset"),
        "shadow": rule_create(
            tenant=tenant, agent=alice, effect="deny", resource="git__status", shadow=True
        ),
    }


@pytest.fixture
def api(admin_user):
    client = APIClient()
    client.force_login(admin_user)
    return client


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def check(client, **body):
    return client.post(CHECK, body, format="json")


def put(client, text, content_type="application/yaml", query=""):
    return client.put(POLICY + query, text, content_type=content_type)


def locations(response) -> set[str]:
    return {e["location"] for e in response.json()["errors"]}


# --- check ---------------------------------------------------------------------------------------
def test_check_allow(api, rules):
    response = check(api, agent="alice", tool="git__log", arguments={"n": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["decision"] == "allow"
    assert body["allowed"] is True
    assert body["rule_id"] == rules["allow"].id
    assert body["reason"] == f"allowed by rule {rules['allow'].id}"
    assert body["shadow"] == {}
    assert body["explanation"][0] == f"decision: allow — {body['reason']}"
    assert body["rules"] == [
        {
            "rule_id": rules["allow"].id,
            "effect": "allow",
            "shadow": False,
            "description": "",
            "active": True,
            "holds": True,
            "conditions": [],
        }
    ]


def test_check_deny_names_the_rule_and_its_conditions(api, rules):
    body = check(api, agent="alice", tool="git__push", arguments={"branch": "main"}).json()
    assert body["decision"] == "deny"
    assert body["allowed"] is False
    assert body["rule_id"] == rules["deny"].id
    assert "no pushes to main" in body["reason"]
    deny = next(r for r in body["rules"] if r["rule_id"] == rules["deny"].id)
    assert deny["holds"] is True
    assert deny["description"] == "no pushes to main"
    assert deny["conditions"] == ['$.branch equals "main": "main" → holds']
    # the same tool elsewhere: the deny rule does not hold, the allow rule decides
    body = check(api, agent="alice", tool="git__push", arguments={"branch": "dev"}).json()
    assert (body["decision"], body["rule_id"]) == ("allow", rules["allow"].id)


def test_check_default_deny_has_no_rule(api, rules):
    body = check(api, agent="alice", tool="time__now").json()
    assert (body["decision"], body["allowed"], body["rule_id"]) == ("deny", False, None)
    assert body["rules"] == []
    assert "no rule's resource glob matches this name" in body["explanation"]


def test_check_require_approval(api, rules):
    body = check(api, agent="alice", tool="git__reset", kind="tool", arguments={}).json()
    assert body["decision"] == "require_approval"
    assert body["allowed"] is False
    assert body["rule_id"] == rules["approval"].id


def test_check_reports_shadow_rules_without_enforcing_them(api, rules):
    body = check(api, agent="alice", tool="git__status").json()
    shadow = rules["shadow"].id
    assert (body["decision"], body["rule_id"]) == ("allow", rules["allow"].id)
    assert body["shadow"] == {"rules": [shadow], "effect": "deny", "rule": shadow}
    assert any(line.startswith(f"shadow: rule {shadow} applies") for line in body["explanation"])
    assert [r["shadow"] for r in body["rules"] if r["rule_id"] == shadow] == [True]


def test_check_calls_and_records_nothing(api, tenant, rules):
    before, records = version(tenant), AuditRecord.objects.count()
    response = check(api, agent="alice", tool="git__push", arguments={"branch": "main"})
    assert response.status_code == 200
    assert version(tenant) == before
    assert AuditRecord.objects.count() == records


def test_check_null_arguments_mean_none(api, rules):
    body = check(api, agent="alice", tool="git__log", arguments=None).json()
    assert body["decision"] == "allow"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tool": "git__log"}, "agent"),
        ({"agent": "alice"}, "tool"),
        ({"agent": "alice", "tool": ""}, "tool"),
        ({"agent": "alice", "tool": "git__log", "arguments": ["main"]}, "arguments"),
        ({"agent": "alice", "tool": "git__log", "arguments": "{}"}, "arguments"),
        ({"agent": "alice", "tool": "git__log", "kind": "llm_model"}, "kind"),
        ({"agent": "alice", "tool": "git__log", "args": {"branch": "main"}}, "args"),
    ],
)
def test_check_bad_body_is_a_400_naming_the_field(api, rules, body, field):
    response = api.post(CHECK, body, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_check_body_must_be_a_json_object(api, rules):
    response = api.post(CHECK, ["alice"], format="json")
    assert response.status_code == 400
    assert "non_field_errors" in response.json()
    response = api.post(CHECK, "{not json", content_type="application/json")
    assert response.status_code == 400
    response = api.post(CHECK, "agent=alice&tool=git__log", content_type="text/plain")
    assert response.status_code == 415


def test_check_unknown_tenant_or_agent_is_a_404(api, rules):
    body = {"agent": "alice", "tool": "x"}
    response = api.post("/api/v1/tenants/nope/policy/check", body, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": "no tenant 'nope'"}
    response = check(api, agent="mallory", tool="git__log")
    assert response.status_code == 404
    assert response.json() == {"detail": "no agent 'mallory' in tenant 'acme'"}


def test_check_looks_up_the_agent_within_the_tenant_only(api, rules):
    other = tenant_create(slug="beta")
    carol = agent_create(tenant=other, name="carol")
    rule_create(tenant=other, agent=carol, effect="allow", resource="*")
    assert check(api, agent="carol", tool="git__log").status_code == 404
    body = {"agent": "carol", "tool": "x"}
    response = api.post("/api/v1/tenants/beta/policy/check", body, format="json")
    assert response.json()["decision"] == "allow"


# --- authentication ------------------------------------------------------------------------------
@pytest.fixture
def viewer(django_user_model):
    return django_user_model.objects.create_user("viewer", password="viewer-pw")


def test_anonymous_gets_401_with_a_basic_challenge(tenant, alice):
    client = APIClient()
    for response in (client.get(POLICY), check(client, agent="alice", tool="x")):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Basic realm="api"'
    client.credentials(HTTP_AUTHORIZATION=basic("admin", "wrong"))
    assert client.get(POLICY).status_code == 401


def test_non_members_are_told_no_such_tenant(tenant, alice, viewer):
    by_session = APIClient()
    by_session.force_login(viewer)
    by_basic = APIClient()
    by_basic.credentials(HTTP_AUTHORIZATION=basic("viewer", "viewer-pw"))
    for client in (by_session, by_basic):
        assert client.get(POLICY).status_code == 404
        assert check(client, agent="alice", tool="x").status_code == 404
        assert put(client, "format: 1\n").status_code == 404


def test_reviewers_read_and_check_but_only_admins_replace_the_policy(tenant, alice, viewer):
    membership = Membership.objects.create(
        user=viewer, tenant=tenant, role=Membership.Role.REVIEWER
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic("viewer", "viewer-pw"))
    assert client.get(POLICY).status_code == 200
    assert check(client, agent="alice", tool="x").json()["decision"] == "deny"
    refused = put(client, "format: 1\n")
    assert refused.status_code == 403
    assert refused.json() == {"detail": "this needs the admin role in tenant 'acme'"}
    membership.role = Membership.Role.ADMIN
    membership.save()
    assert put(client, "format: 1\n").status_code == 200


def test_basic_auth_reads_and_writes_without_csrf(tenant, alice, admin_user):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=basic("admin", "password"))
    assert client.get(POLICY).status_code == 200
    response = put(client, "everyone:\n  - effect: allow\n    resource: 'time__*'\n")
    assert response.status_code == 200, response.content
    assert response.json()["rules"]["created"] == 1
    assert check(client, agent="alice", tool="time__now").json()["decision"] == "allow"


def test_session_writes_need_the_csrf_token(tenant, admin_user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = put(client, "format: 1\n")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert client.get(POLICY).status_code == 200  # reads need no token


# --- policy as code ------------------------------------------------------------------------------
def test_get_returns_the_export_as_yaml(api, tenant, rules):
    response = api.get(POLICY)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/yaml; charset=utf-8"
    assert response.content.decode() == policy_export(tenant=tenant)
    assert api.get("/api/v1/tenants/nope/policy").status_code == 404


def test_get_put_round_trip(api, tenant, alice, rules):
    role_create(tenant=tenant, name="developer", description="devs", agents=[alice])
    rule_create(
        tenant=tenant,
        role=tenant.roles.get(),
        effect="allow",
        resource="fs__read",
        conditions=[{"path": "$.path", "op": "path_under", "value": "/srv"}],
    )
    exported = api.get(POLICY).content.decode()
    response = put(api, exported)
    assert response.status_code == 200, response.content
    unchanged = {"created": 0, "updated": 0, "deleted": 0}
    assert response.json() == {"roles": unchanged, "rules": unchanged, "dry_run": False}
    assert api.get(POLICY).content.decode() == exported

    document = yaml.safe_load(exported)
    document["everyone"] = [{"effect": "deny", "resource": "git__reset"}]  # replaces the approval
    document["roles"][0]["rules"][0]["description"] = "read under /srv"
    response = put(api, yaml.safe_dump(document))
    assert response.status_code == 200, response.content
    assert response.json()["rules"] == {"created": 1, "updated": 1, "deleted": 1}
    assert not Rule.objects.filter(id=rules["approval"].id).exists()
    body = check(api, agent="alice", tool="git__reset").json()
    assert (body["decision"], body["rule_id"]) == ("deny", Rule.objects.latest("id").id)


def test_put_accepts_text_yaml_and_json(api, tenant, alice):
    response = put(api, "everyone: [{effect: allow, resource: 'a__*'}]", "text/yaml")
    assert response.status_code == 200, response.content
    document = {
        "everyone": [
            {
                "effect": "allow",
                "resource": "b__*",
                "conditions": [{"path": "$.n", "op": "range", "value": {"max": 1e20}}],
            }
        ]
    }
    # tab indentation and an exponent: JSON that PyYAML alone would misread
    response = put(api, json.dumps(document, indent="\t"), "application/json")
    assert response.status_code == 200, response.content
    assert response.json()["rules"] == {"created": 1, "updated": 0, "deleted": 1}
    assert Rule.objects.get().conditions[0]["value"] == {"max": 1e20}
    assert put(api, "format: 1", "text/plain").status_code == 415


def test_put_with_errors_reports_their_locations_and_changes_nothing(api, tenant, rules):
    before, exported = version(tenant), policy_export(tenant=tenant)
    document = yaml.safe_load(exported)
    document["roles"] = [{"name": "ops", "agents": ["ghost"]}]
    document["everyone"].append(
        {
            "effect": "allow",
            "resource": "x",
            "conditions": [{"path": "$.a", "op": "nope", "value": 1}],
        }
    )
    document["agents"]["nobody"] = [{"effect": "allow", "resource": "y"}]
    document["agents"]["alice"][0]["id"] = 999_999
    response = put(api, yaml.safe_dump(document))
    assert response.status_code == 400
    assert locations(response) == {
        "roles[0].agents[0]",
        "everyone[1].conditions[0].op",
        "agents.nobody",
        "agents.alice[0].id",
    }
    assert all(e["message"] for e in response.json()["errors"])
    assert version(tenant) == before
    assert policy_export(tenant=tenant) == exported


def test_put_schema_and_syntax_errors(api, tenant, rules):
    response = put(api, "everyone:\n  - effect: maybe\n    resource: x\n    colour: red\n")
    assert response.status_code == 400
    assert locations(response) == {"everyone[0].effect", "everyone[0].colour"}
    response = put(api, "everyone: [\n  {effect: allow\n")
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["location"].startswith("line ")
    assert error["message"].startswith("not valid YAML")
    response = put(api, '{"everyone": [}', "application/json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["location"] == "line 1, column 15"
    for empty in ("", "  \n"):
        response = put(api, empty)
        assert response.status_code == 400
        assert locations(response) == {"document"}
    assert Rule.objects.count() == len(rules)


def test_put_dry_run_validates_only(api, tenant, rules):
    before, exported = version(tenant), policy_export(tenant=tenant)
    response = put(api, "everyone: [{effect: allow, resource: '*'}]\n", query="?dry_run=1")
    assert response.status_code == 200, response.content
    assert response.json()["dry_run"] is True
    # Counted as if applied: the document replaces every existing rule with its one.
    assert response.json()["rules"] == {"created": 1, "updated": 0, "deleted": len(rules)}
    response = put(api, "everyone: [{effect: allow}]\n", query="?dry_run=true")
    assert response.status_code == 400
    assert locations(response) == {"everyone[0].resource"}
    assert version(tenant) == before
    assert policy_export(tenant=tenant) == exported
    response = put(api, "format: 1\n", query="?dry_run=perhaps")
    assert response.status_code == 400
    assert "dry_run" in response.json()


def test_put_refuses_an_oversized_body(api, tenant, rules, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64
    response = put(api, "everyone: []\n" + "# padding\n" * 10)
    assert response.status_code == 413
    assert Rule.objects.count() == len(rules)
