"""Django admin for policy: rule validation through the engine, "try the policy", role
membership within a tenant, an agent's owner and presence, a tenant's approval settings."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditRecord
from governance.admin import AgentAdmin, TenantAdmin
from governance.models import Agent, Rule, Tenant
from governance.services.agents import tenant_create
from governance.services.policy import role_create, rule_create
from governance.services.versions import tenant_version_bump
from tests.governance.conftest import version

pytestmark = pytest.mark.django_db

RULE_ADD = "admin:governance_rule_add"
TRY = "admin:governance_rule_try"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """admin_client's user logs in with a password; PBKDF2 would cost 0.2 s a test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def rule_form(tenant, **fields) -> dict:
    data = {
        "tenant": tenant.id,
        "effect": "allow",
        "resource_kind": "tool",
        "resource": "git__*",
        "description": "",
        "role": "",
        "agent": "",
        "conditions": "[]",
        "valid_from_0": "",
        "valid_from_1": "",
        "valid_until_0": "",
        "valid_until_1": "",
    }
    data.update(fields)
    return data


def form_errors(response) -> dict:
    assert response.status_code == 200
    return response.context["adminform"].form.errors


def test_the_rule_form_refuses_a_bad_regex_on_the_conditions_field(admin_client, tenant):
    start = version(tenant)
    conditions = [{"path": "$.branch", "op": "regex", "value": "(?=main)"}]
    response = admin_client.post(
        reverse(RULE_ADD), rule_form(tenant, conditions=json.dumps(conditions))
    )
    errors = form_errors(response)
    assert list(errors) == ["conditions"]
    [message] = errors["conditions"]
    assert message.startswith("conditions[0].value: not an RE2 regular expression")
    assert not Rule.objects.exists()
    assert version(tenant) == start


def test_an_empty_conditions_box_means_no_conditions(admin_client, tenant):
    response = admin_client.post(reverse(RULE_ADD), rule_form(tenant, conditions=""))
    assert response.status_code == 302, form_errors(response)
    assert Rule.objects.get().conditions == []


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"conditions": '{"path": "$.a"}'}, "conditions", "conditions are a list of objects"),
        (
            {"conditions": '[{"path": "$.a", "op": "range", "value": {}}]'},
            "conditions",
            "conditions[0].value: range takes",
        ),
        (
            {
                "valid_from_0": "2030-01-01",
                "valid_from_1": "00:00:00",
                "valid_until_0": "2025-01-01",
                "valid_until_1": "00:00:00",
            },
            "valid_until",
            "must be after valid_from",
        ),
    ],
)
def test_the_rule_form_puts_engine_errors_on_their_field(
    admin_client, tenant, fields, field, message
):
    response = admin_client.post(reverse(RULE_ADD), rule_form(tenant, **fields))
    errors = form_errors(response)
    assert list(errors) == [field]
    assert errors[field][0].startswith(message)
    assert not Rule.objects.exists()


def test_the_rule_form_refuses_a_role_of_another_tenant(admin_client, tenant):
    other = tenant_create(slug="other")
    foreign = role_create(tenant=other, name="dev")
    response = admin_client.post(reverse(RULE_ADD), rule_form(tenant, role=foreign.id))
    assert form_errors(response) == {"role": ["this role belongs to another tenant"]}


def test_the_rule_form_saves_a_good_rule_and_bumps_the_version(admin_client, tenant, alice):
    start = version(tenant)
    conditions = [{"path": "$.repo_path", "op": "path_under", "value": "/srv/repos"}]
    response = admin_client.post(
        reverse(RULE_ADD),
        rule_form(
            tenant,
            agent=alice.id,
            conditions=json.dumps(conditions),
            description="repos only",
            valid_from_0="2025-01-01",
            valid_from_1="00:00:00",
        ),
    )
    assert response.status_code == 302, response.context and form_errors(response)
    rule = Rule.objects.get()
    assert (rule.tenant, rule.agent, rule.effect, rule.resource) == (
        tenant,
        alice,
        "allow",
        "git__*",
    )
    assert rule.conditions == conditions
    assert rule.description == "repos only"
    assert rule.valid_from.isoformat() == "2025-01-01T00:00:00+00:00"
    assert version(tenant) == start + 1


def test_the_rule_list_links_to_try_it(admin_client, tenant):
    response = admin_client.get(reverse("admin:governance_rule_changelist"))
    assert response.status_code == 200
    assert reverse(TRY) in response.content.decode()


def test_try_it_renders_the_decision_and_explanation(admin_client, tenant, alice):
    allow = rule_create(tenant=tenant, agent=alice, effect="allow", resource="git__*")
    deny = rule_create(
        tenant=tenant,
        effect="deny",
        resource="git__push",
        conditions=[{"path": "$.branch", "op": "equals", "value": "main"}],
        description="no pushes to main",
    )
    start = version(tenant)
    assert admin_client.get(reverse(TRY)).status_code == 200
    response = admin_client.post(
        reverse(TRY),
        {"agent": alice.id, "tool": "git__push", "arguments": '{"branch": "main"}'},
    )
    assert response.status_code == 200
    explanation = response.context["explanation"]
    assert (explanation.decision.effect, explanation.decision.rule_id) == ("deny", deny.id)
    page = response.content.decode()
    assert '<h2 id="decision">Decision: deny</h2>' in page
    assert f"decision: deny — denied by rule {deny.id} (no pushes to main)" in page
    assert "$.branch equals &quot;main&quot;: &quot;main&quot; → holds" in page
    assert f"rule {allow.id} allow: applies" in page
    response = admin_client.post(
        reverse(TRY), {"agent": alice.id, "tool": "git__push", "arguments": '{"branch": "dev"}'}
    )
    assert '<h2 id="decision">Decision: allow</h2>' in response.content.decode()
    assert version(tenant) == start  # nothing recorded


@pytest.mark.parametrize("arguments", ["[1]", '"text"', "{"])
def test_try_it_refuses_arguments_that_are_not_an_object(admin_client, alice, arguments):
    response = admin_client.post(
        reverse(TRY), {"agent": alice.id, "tool": "git__push", "arguments": arguments}
    )
    assert response.status_code == 200
    assert response.context["explanation"] is None
    assert "arguments" in response.context["form"].errors
    assert 'id="decision"' not in response.content.decode()


def test_try_it_needs_staff(client, alice):
    response = client.get(reverse(TRY))
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def agent_form(tenant, **fields) -> dict:
    data = {
        "tenant": tenant.id,
        "name": "bob",
        "description": "",
        "is_active": "on",
        "tokens-TOTAL_FORMS": "0",
        "tokens-INITIAL_FORMS": "0",
        "tokens-MIN_NUM_FORMS": "0",
        "tokens-MAX_NUM_FORMS": "1000",
    }
    data.update(fields)
    return data


def test_the_agent_form_refuses_a_role_of_another_tenant(admin_client, tenant):
    own = role_create(tenant=tenant, name="dev")
    foreign = role_create(tenant=tenant_create(slug="other"), name="dev")
    start = version(tenant)
    response = admin_client.post(
        reverse("admin:governance_agent_add"), agent_form(tenant, roles=[own.id, foreign.id])
    )
    assert form_errors(response) == {"roles": ["an agent holds roles of its own tenant only"]}
    assert not Agent.objects.filter(name="bob").exists()
    assert version(tenant) == start


def test_the_agent_form_gives_roles_of_its_own_tenant(admin_client, tenant):
    own = role_create(tenant=tenant, name="dev")
    start = version(tenant)
    response = admin_client.post(
        reverse("admin:governance_agent_add"), agent_form(tenant, roles=[own.id])
    )
    assert response.status_code == 302
    assert list(Agent.objects.get(name="bob").roles.all()) == [own]
    assert version(tenant) == start + 1


# --- an agent's owner and presence, a tenant's approval settings ------------------------------
@pytest.fixture
def rita(django_user_model):
    return django_user_model.objects.create_user("rita")


def records_after(tenant, seq: int) -> list[AuditRecord]:
    return list(AuditRecord.objects.filter(tenant=tenant, seq__gt=seq).order_by("seq"))


def chain_head(tenant) -> int:
    return AuditRecord.objects.filter(tenant=tenant).aggregate(seq=Max("seq"))["seq"] or 0


def test_an_agents_owner_is_edited_and_its_presence_only_shown(admin_client, tenant, alice, rita):
    seen = timezone.now() - timedelta(minutes=5)
    Agent.objects.filter(id=alice.id).update(last_seen_at=seen)
    url = reverse("admin:governance_agent_change", args=[alice.id])
    page = admin_client.get(url)
    form = page.context["adminform"].form
    assert "owner" in form.fields
    assert "last_seen_at" not in form.fields
    assert 'name="last_seen_at' not in page.content.decode()
    start, mark = version(tenant), chain_head(tenant)
    posted = agent_form(tenant, name="alice", owner=rita.id, last_seen_at="2020-01-01T00:00:00Z")
    response = admin_client.post(url, posted | {"last_seen_at_0": "2020-01-01"})
    assert response.status_code == 302, form_errors(response)
    stored = Agent.objects.get(id=alice.id)
    assert (stored.owner, stored.last_seen_at) == (rita, seen)
    [record] = records_after(tenant, mark)
    assert (record.reason, record.diff) == ("changed", {"owner": [None, rita.id]})
    assert version(tenant) == start + 1


def test_an_admin_save_keeps_the_presence_a_gateway_wrote_meanwhile(
    admin_client, tenant, alice, monkeypatch
):
    later = timezone.now()
    loaded = AgentAdmin.get_object

    def gateway_writes_after_the_page_loads(self, request, object_id, from_field=None):
        agent = loaded(self, request, object_id, from_field)
        Agent.objects.filter(id=agent.id).update(last_seen_at=later)
        return agent

    monkeypatch.setattr(AgentAdmin, "get_object", gateway_writes_after_the_page_loads)
    url = reverse("admin:governance_agent_change", args=[alice.id])
    response = admin_client.post(url, agent_form(tenant, name="alice", description="builds"))
    assert response.status_code == 302, form_errors(response)
    stored = Agent.objects.get(id=alice.id)
    assert (stored.description, stored.last_seen_at) == ("builds", later)


def test_an_admin_save_of_the_tenant_keeps_a_version_bumped_meanwhile(
    admin_client, tenant, monkeypatch
):
    loaded = TenantAdmin.get_object

    def bumped_after_the_page_loads(self, request, object_id, from_field=None):
        obj = loaded(self, request, object_id, from_field)
        tenant_version_bump(tenant_id=obj.id)
        return obj

    monkeypatch.setattr(TenantAdmin, "get_object", bumped_after_the_page_loads)
    start = version(tenant)
    data = {
        "slug": "acme",
        "name": "Acme",
        "denial_detail": "rule",
        "four_eyes": "on",
        "approval_timeout_seconds": "600",
        "audit_retention_days": "",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    url = reverse("admin:governance_tenant_change", args=[tenant.id])
    response = admin_client.post(url, data)
    assert response.status_code == 302, form_errors(response)
    stored = Tenant.objects.get(id=tenant.id)
    assert (stored.name, stored.approval_timeout_seconds) == ("Acme", 600)
    assert stored.version == start + 2  # the bump meanwhile, then this change's own


def test_an_agents_owner_is_picked_by_autocomplete(admin_client, alice, rita):
    response = admin_client.get(
        reverse("admin:autocomplete"),
        {"app_label": "governance", "model_name": "agent", "field_name": "owner", "term": "rit"},
    )
    assert response.status_code == 200
    assert [r["text"] for r in response.json()["results"]] == ["rita"]


def test_the_tenant_admin_offers_four_eyes_and_the_approval_timeout(admin_client, tenant):
    url = reverse("admin:governance_tenant_change", args=[tenant.id])
    form = admin_client.get(url).context["adminform"].form
    assert {"four_eyes", "approval_timeout_seconds"} <= set(form.fields)
    assert "version" not in form.fields
    changelist = reverse("admin:governance_tenant_changelist")
    assert admin_client.get(changelist, {"four_eyes__exact": "1"}).context["cl"].result_count == 1
    assert admin_client.get(changelist, {"four_eyes__exact": "0"}).context["cl"].result_count == 0
    listed = admin_client.get(changelist, {"denial_detail__exact": "full"})
    assert listed.context["cl"].result_count == 0


def test_a_tenant_is_added_with_its_approval_settings_and_then_its_people(admin_client):
    add = reverse("admin:governance_tenant_add")
    assert "memberships-TOTAL_FORMS" not in admin_client.get(add).content.decode()
    data = {
        "slug": "beta",
        "denial_detail": "rule",
        "approval_timeout_seconds": "60",
        "audit_retention_days": "",
    }
    response = admin_client.post(add, data)
    assert response.status_code == 302, form_errors(response)
    beta = Tenant.objects.get(slug="beta")
    assert (beta.four_eyes, beta.approval_timeout_seconds) == (False, 60)
    change = reverse("admin:governance_tenant_change", args=[beta.id])
    assert "memberships-TOTAL_FORMS" in admin_client.get(change).content.decode()
