"""The Django admin over every model: each changelist loads with each of its filters and a
search; approval requests are shown, never decided, changed or deleted there; memberships
(who may use a tenant's dashboard) are recorded in the tenant's chain without a version bump."""

from __future__ import annotations

import uuid

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditRecord
from audit.services import checkpoint_create
from audit.verify import chain_verify
from governance.admin import call_records_url
from governance.models import (
    Agent,
    ApprovalRequest,
    Membership,
    RateLimit,
    SlowCheck,
    Tenant,
)
from governance.services.agents import tenant_create, token_issue
from governance.services.approvals import approval_decide, approval_request_create
from governance.services.members import membership_set
from governance.services.nodes import node_start
from governance.services.policy import role_create, rule_create
from governance.services.toolservers import tool_catalog_sync, toolserver_add
from tests.audit.conftest import append, audit_record
from tests.governance.conftest import version

pytestmark = pytest.mark.django_db

STATUS = {"name": "status", "description": "Show the status.", "inputSchema": {"type": "object"}}


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def chains_verify():
    """Whatever a test did, every tenant's chain still verifies."""
    yield
    for tenant in Tenant.objects.all():
        report = chain_verify(tenant=tenant)
        assert report.ok, f"{tenant}: {report.broken}"


@pytest.fixture
def rita(django_user_model):
    return django_user_model.objects.create_user("rita", email="rita@example.com")


def approval_of(tenant: Tenant, agent: Agent, **fields) -> ApprovalRequest:
    values = {
        "tenant_id": tenant.id,
        "agent_id": agent.id,
        "agent_name": agent.name,
        "call_id": uuid.uuid4(),
        "tool": "git__push",
        "arguments": {"branch": "main"},
        "recorded_arguments": {"branch": "main"},
        "rule_id": None,
        "reason": "pushes need a second look",
        "policy_version": version(tenant),
        "node": "gw-1",
        "timeout_seconds": 900,
        "lease_seconds": 30,
    }
    return approval_request_create(**(values | fields))


@pytest.fixture
def world(tenant, alice, rita, admin_user):
    """A row of every model, so each list filter has values to offer."""
    rita.groups.add(Group.objects.create(name="reviewers"))
    Agent.objects.filter(id=alice.id).update(owner=rita, last_seen_at=timezone.now())
    dev = role_create(tenant=tenant, name="dev", agents=[alice])
    rule_create(tenant=tenant, role=dev, effect="require_approval", resource="git__push")
    token_issue(agent=alice)
    server = toolserver_add(tenant=tenant, name="git", command="mcp-server-git")
    tool_catalog_sync(server_id=server.id, tools=[STATUS])
    tool_catalog_sync(server_id=server.id, tools=[{**STATUS, "description": "v2"}])  # an alert
    RateLimit.objects.create(tenant=tenant, calls=10, window_seconds=60)
    SlowCheck.objects.create(
        tenant=tenant,
        call_id=uuid.uuid4(),
        name="injection_similarity",
        stage="input",
        mode="blocking",
        action="block",
        payload={"text": "hi"},
    )
    membership_set(tenant=tenant, user=rita, role=Membership.Role.REVIEWER)
    decided = approval_of(tenant, alice)
    approval_decide(approval=decided, user=admin_user, approve=True, comment="fine")
    approval_of(tenant, alice, tool="git__status")
    checkpoint_create(tenant=tenant)
    # A second tenant, and a second value of each field the lists filter on.
    other = tenant_create(slug="globex")
    toolserver_add(tenant=other, name="docs", url="https://docs.example/mcp")
    SlowCheck.objects.create(
        tenant=other,
        call_id=uuid.uuid4(),
        name="other_check",
        stage="output",
        mode="post_hoc",
        action="flag",
        payload={"text": "hi"},
    )
    append(audit_record(other, transport="ws", protocol_era="handshake"))
    node_start(id=uuid.uuid4(), name="gw-1:8000")


def filter_queries(response) -> list[str]:
    """One query string per list filter of the page: its first choice that is not shown
    already (not "All"). Each filter must offer one."""
    changelist = response.context["cl"]
    model_admin = changelist.model_admin
    shown = len(changelist.filter_specs)
    assert shown == len(model_admin.list_filter), f"{model_admin}: {shown} filters shown"
    queries = []
    for spec in changelist.filter_specs:
        choices = [c for c in spec.choices(changelist) if not c["selected"]]
        assert choices, f"{changelist.model.__name__}: filter {spec.title!r} offers no choice"
        queries.append(choices[0]["query_string"])
    return queries


@pytest.mark.usefixtures("world")
@pytest.mark.parametrize(
    "model_admin",
    list(admin.site._registry.values()),
    ids=lambda model_admin: model_admin.opts.label_lower,
)
def test_every_changelist_loads_with_each_filter_and_a_search(admin_client, model_admin):
    url = reverse(f"admin:{model_admin.opts.app_label}_{model_admin.opts.model_name}_changelist")
    response = admin_client.get(url)
    assert response.status_code == 200
    changelist = response.context["cl"]
    assert changelist.result_count > 0
    first = changelist.result_list[0]
    assert admin_client.get(changelist.url_for_result(first)).status_code == 200
    for query in filter_queries(response):
        filtered = admin_client.get(url + query)
        assert filtered.status_code == 200, query  # a bad lookup redirects to ?e=1
        assert "cl" in filtered.context, query
    if model_admin.date_hierarchy:
        year = f"?{model_admin.date_hierarchy}__year={timezone.now().year}"
        assert admin_client.get(url + year).context["cl"].result_count > 0
    if model_admin.search_fields:
        for term in ("acme", "git", str(uuid.uuid4())):
            assert admin_client.get(url, {"q": term}).status_code == 200, term


@pytest.mark.usefixtures("world")
def test_every_model_of_governance_and_audit_is_registered():
    from django.apps import apps

    for label in ("governance", "audit"):
        for model in apps.get_app_config(label).get_models():
            assert admin.site.is_registered(model), model
    assert admin.site.is_registered(get_user_model())


# --- approval requests -------------------------------------------------------------------------
def test_approval_requests_are_shown_and_searchable_by_call_and_id(admin_client, tenant, alice):
    approval = approval_of(tenant, alice)
    other = approval_of(tenant, alice, tool="git__status")
    url = reverse("admin:governance_approvalrequest_changelist")
    assert list(admin_client.get(url).context["cl"].list_display) == [
        "created_at",
        "tenant",
        "agent_name",
        "tool",
        "status",
        "decided_by_name",
        "expires_at",
        "call_records",
    ]
    for term in (approval.call_id, approval.id):
        found = admin_client.get(url, {"q": str(term)}).context["cl"].result_list
        assert list(found) == [approval]
    assert list(admin_client.get(url, {"q": "git__status"}).context["cl"].result_list) == [other]


def test_an_approval_request_cannot_be_added_changed_decided_or_deleted(
    admin_client, tenant, alice
):
    approval = approval_of(tenant, alice)
    change = reverse("admin:governance_approvalrequest_change", args=[approval.id])
    delete = reverse("admin:governance_approvalrequest_delete", args=[approval.id])
    changelist = reverse("admin:governance_approvalrequest_changelist")
    assert admin_client.get(reverse("admin:governance_approvalrequest_add")).status_code == 403
    view = admin_client.get(change)
    assert view.status_code == 200
    page = view.content.decode()
    assert not view.context["adminform"].form.fields  # nothing on the page is a form field
    assert 'name="status"' not in page
    assert 'name="_save"' not in page
    assert "deletelink" not in page
    mark = AuditRecord.objects.filter(tenant=tenant).count()
    assert admin_client.post(change, {"status": "approved", "comment": "ok"}).status_code == 403
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert admin_client.get(changelist).context["action_form"] is None  # no actions at all
    admin_client.post(
        changelist, {"action": "delete_selected", "_selected_action": [approval.id], "post": "yes"}
    )
    stored = ApprovalRequest.objects.get(id=approval.id)
    assert (stored.status, stored.decided_by_name, stored.comment) == ("pending", "", "")
    assert AuditRecord.objects.filter(tenant=tenant).count() == mark


def test_an_approval_request_links_to_the_records_of_its_call(admin_client, tenant, alice):
    approval = approval_of(tenant, alice)
    approval_of(tenant, alice)  # another call's records stay out
    rita = get_user_model().objects.create_user("rita")
    approval_decide(approval=approval, user=rita, approve=False, comment="not today")
    url = call_records_url(tenant_id=tenant.id, call_id=approval.call_id)
    change = reverse("admin:governance_approvalrequest_change", args=[approval.id])
    assert url.replace("&", "&amp;") in admin_client.get(change).content.decode()
    listed = admin_client.get(url)
    assert listed.status_code == 200
    records = list(listed.context["cl"].result_list)
    assert [(r.kind, r.actor, r.diff["status"]) for r in reversed(records)] == [
        ("approval", "alice", [None, "pending"]),
        ("approval", "rita", ["pending", "denied"]),
    ]


# --- memberships -------------------------------------------------------------------------------
def last_records(tenant: Tenant, seq: int) -> list[AuditRecord]:
    return list(AuditRecord.objects.filter(tenant=tenant, seq__gt=seq).order_by("seq"))


def head(tenant: Tenant) -> int:
    latest = AuditRecord.objects.filter(tenant=tenant).order_by("-seq").first()
    return latest.seq if latest else 0


def what(record: AuditRecord) -> tuple[str, str, str, str]:
    return record.kind, record.actor, record.reason, record.subject


def test_a_membership_added_changed_and_deleted_in_its_admin_is_recorded_without_a_bump(
    admin_client, admin_user, tenant, rita
):
    start, mark = version(tenant), head(tenant)
    add = reverse("admin:governance_membership_add")
    response = admin_client.post(add, {"user": rita.id, "tenant": tenant.id, "role": "reviewer"})
    assert response.status_code == 302
    membership = Membership.objects.get()
    change = reverse("admin:governance_membership_change", args=[membership.id])
    assert admin_client.post(change, {"role": "admin"}).status_code == 302
    assert admin_client.post(change, {"role": "admin"}).status_code == 302  # no change: no record
    subject = f"governance.membership {membership.id} 'rita admin of acme'"
    delete = reverse("admin:governance_membership_delete", args=[membership.id])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 302
    added, changed, removed = last_records(tenant, mark)
    user = admin_user.username
    assert what(added) == ("admin", user, "created", subject.replace("admin of", "reviewer of"))
    assert added.diff == {
        "user": [None, rita.id],
        "tenant": [None, tenant.id],
        "role": [None, "reviewer"],
    }
    assert (what(changed), changed.diff) == (
        ("admin", user, "changed", subject),
        {"role": ["reviewer", "admin"]},
    )
    assert what(removed) == ("admin", user, "deleted", subject)
    assert version(tenant) == start


def test_a_membership_keeps_its_person_and_tenant(admin_client, tenant, rita):
    other = Tenant.objects.create(slug="globex")
    membership = membership_set(tenant=tenant, user=rita, role="reviewer")
    change = reverse("admin:governance_membership_change", args=[membership.id])
    form = admin_client.get(change).context["adminform"].form
    assert list(form.fields) == ["role"]
    response = admin_client.post(change, {"tenant": other.id, "user": rita.id, "role": "admin"})
    assert response.status_code == 302
    assert Membership.objects.values_list("tenant", "role").get() == (tenant.id, "admin")


def membership_rows(prefix: str, rows: list[dict], initial: int = 0) -> dict:
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for i, row in enumerate(rows):
        data.update({f"{prefix}-{i}-{name}": value for name, value in row.items()})
    return data


def tenant_form(tenant: Tenant, **fields) -> dict:
    data = {
        "slug": tenant.slug,
        "name": tenant.name,
        "denial_detail": tenant.denial_detail,
        "four_eyes": "on" if tenant.four_eyes else "",
        "approval_timeout_seconds": str(tenant.approval_timeout_seconds),
        "audit_retention_days": "",
    }
    return data | fields


def test_memberships_inline_on_the_tenant_are_recorded_without_a_bump(
    admin_client, admin_user, tenant, rita, django_user_model
):
    sam = django_user_model.objects.create_user("sam")
    kept = membership_set(tenant=tenant, user=sam, role="reviewer")
    start, mark = version(tenant), head(tenant)
    data = tenant_form(tenant) | membership_rows(
        "memberships",
        [
            {"id": kept.id, "tenant": tenant.id, "user": sam.id, "role": "admin"},
            {"id": "", "tenant": tenant.id, "user": rita.id, "role": "reviewer"},
        ],
        initial=1,
    )
    url = reverse("admin:governance_tenant_change", args=[tenant.id])
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["inline_admin_formsets"]
    added = Membership.objects.get(user=rita)
    records = last_records(tenant, mark)
    assert [(r.actor, r.reason, r.subject, r.diff) for r in records] == [
        (
            admin_user.username,
            "created",
            f"governance.membership {added.id} 'rita reviewer of acme'",
            {"user": [None, rita.id], "tenant": [None, tenant.id], "role": [None, "reviewer"]},
        ),
        (
            admin_user.username,
            "changed",
            f"governance.membership {kept.id} 'sam admin of acme'",
            {"role": ["reviewer", "admin"]},
        ),
    ]
    assert version(tenant) == start  # nor is the tenant, unchanged, recorded

    mark = head(tenant)
    data = tenant_form(tenant, four_eyes="") | membership_rows("memberships", [], initial=0)
    assert admin_client.post(url, data).status_code == 302
    [record] = last_records(tenant, mark)
    assert (record.reason, record.diff) == ("changed", {"four_eyes": [True, False]})
    assert version(tenant) == start + 1  # a change of the tenant is one


def user_form(user, **fields) -> dict:
    joined = timezone.localtime(user.date_joined)
    data = {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": user.email,
        "is_active": "on",
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        "last_login_0": "",
        "last_login_1": "",
    }
    return data | fields


def test_a_person_is_given_a_role_in_a_tenant_on_their_user_page(
    admin_client, admin_user, tenant, rita
):
    other = Tenant.objects.create(slug="globex")
    page = admin_client.get(reverse("admin:auth_user_change", args=[rita.id]))
    assert "memberships-TOTAL_FORMS" in page.content.decode()
    marks = {tenant.id: head(tenant), other.id: head(other)}
    versions = {tenant.id: version(tenant), other.id: version(other)}
    data = user_form(rita) | membership_rows(
        "memberships",
        [
            {"id": "", "user": rita.id, "tenant": tenant.id, "role": "reviewer"},
            {"id": "", "user": rita.id, "tenant": other.id, "role": "admin"},
        ],
    )
    response = admin_client.post(reverse("admin:auth_user_change", args=[rita.id]), data)
    assert response.status_code == 302, response.context["inline_admin_formsets"]
    for place, role in ((tenant, "reviewer"), (other, "admin")):
        membership = Membership.objects.get(user=rita, tenant=place)
        [record] = last_records(place, marks[place.id])
        assert what(record) == (
            "admin",
            admin_user.username,
            "created",
            f"governance.membership {membership.id} 'rita {role} of {place.slug}'",
        )
        assert record.diff["role"] == [None, role]
        assert version(place) == versions[place.id]


def test_deleting_a_person_records_their_memberships_and_agents_going(
    admin_client, admin_user, tenant, alice, rita
):
    membership = membership_set(tenant=tenant, user=rita, role="admin")
    Agent.objects.filter(id=alice.id).update(owner=rita)
    start, mark = version(tenant), head(tenant)
    person = f"auth.user {rita.id} 'rita'"
    delete = reverse("admin:auth_user_delete", args=[rita.id])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 302
    gone, orphaned = last_records(tenant, mark)
    assert (gone.actor, gone.reason, gone.subject) == (
        admin_user.username,
        f"deleted with {person}",
        f"governance.membership {membership.id} 'rita admin of acme'",
    )
    assert gone.diff == {
        "user": [rita.id, None],
        "tenant": [tenant.id, None],
        "role": ["admin", None],
    }
    assert (orphaned.reason, orphaned.subject, orphaned.diff) == (
        f"changed with {person} deleted",
        f"governance.agent {alice.id} 'acme/alice'",
        {"owner": [rita.id, None]},
    )
    assert Agent.objects.get(id=alice.id).owner is None
    assert version(tenant) == start + 1  # the agent changed


def test_memberships_deleted_in_bulk_are_each_recorded_without_a_bump(
    admin_client, tenant, rita, django_user_model
):
    sam = django_user_model.objects.create_user("sam")
    memberships = [membership_set(tenant=tenant, user=u, role="reviewer") for u in (rita, sam)]
    start, mark = version(tenant), head(tenant)
    response = admin_client.post(
        reverse("admin:governance_membership_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [m.id for m in memberships],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not Membership.objects.exists()
    assert [(r.reason, r.subject) for r in last_records(tenant, mark)] == [
        ("deleted", f"governance.membership {m.id} '{m}'") for m in memberships
    ]
    assert version(tenant) == start
