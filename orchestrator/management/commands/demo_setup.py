"""Idempotent demo data for the embedded default: a tenant, an admin login, a reviewer login,
an agent with a token, and the time MCP server, allowed to it by a rule, with conversions held
for a reviewer's approval. The demo credentials are kept in DATA_DIR/demo-credentials.json
(mode 0600) so every `make run` can print them again."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from governance.management.commands._util import cli_actor
from governance.models import Agent, Membership, Rule, Tenant, ToolServer
from governance.services.agents import agent_create, tenant_create, token_digest, token_issue
from governance.services.members import membership_set
from governance.services.policy import rule_create

TENANT, AGENT, SERVER, REVIEWER = "demo", "demo-agent", "time", "reviewer"
HELD_TOOL = "time__convert_time"  # the demo's tool that waits for a reviewer


def credentials_path() -> Path:
    return Path(settings.DATA_DIR) / "demo-credentials.json"


class Command(BaseCommand):
    help = "Create (once) the demo tenant, admin login, agent token and time tool server."

    def handle(self, *args, **options):
        path = credentials_path()
        creds = json.loads(path.read_text()) if path.exists() else {}
        actor = cli_actor()  # whoever runs `make run`; toolserver_add names them itself
        tenant = Tenant.objects.filter(slug=TENANT).first() or tenant_create(
            slug=TENANT, name="Demo", actor=actor
        )

        user_model = get_user_model()
        if not creds.get("admin_password"):
            creds["admin_password"] = secrets.token_urlsafe(12)
        admin = user_model.objects.filter(username="admin").first()
        if admin is None:
            user_model.objects.create_superuser("admin", "", creds["admin_password"])
        elif not admin.check_password(creds["admin_password"]):
            admin.set_password(creds["admin_password"])
            admin.save(update_fields=["password"])
        if not creds.get("reviewer_password"):
            creds["reviewer_password"] = secrets.token_urlsafe(12)
        reviewer = user_model.objects.filter(username=REVIEWER).first()
        if reviewer is None:
            reviewer = user_model.objects.create_user(REVIEWER, "", creds["reviewer_password"])
        elif not reviewer.check_password(creds["reviewer_password"]):
            reviewer.set_password(creds["reviewer_password"])
            reviewer.save(update_fields=["password"])
        membership_set(tenant=tenant, user=reviewer, role=Membership.Role.REVIEWER, actor=actor)

        agent = Agent.objects.filter(tenant=tenant, name=AGENT).first() or agent_create(
            tenant=tenant, name=AGENT, description="The demo agent of `make run`.", actor=actor
        )
        token = creds.get("agent_token", "")
        live = agent.tokens.filter(digest=token_digest(token), revoked_at__isnull=True).exists()
        if not live:
            creds["agent_token"] = token_issue(agent=agent, actor=actor).token

        if not ToolServer.objects.filter(tenant=tenant, name=SERVER).exists():
            try:
                call_command(
                    "toolserver_add",
                    SERVER,
                    tenant=TENANT,
                    cmd=f"{sys.executable} -m mcp_server_time",
                    stdout=self.stdout,
                )
            except CommandError as exc:
                self.stderr.write(f"warning: {exc}")
        if not Rule.objects.filter(tenant=tenant, agent=agent).exists():
            rule_create(
                tenant=tenant,
                agent=agent,
                effect=Rule.Effect.ALLOW,
                resource=f"{SERVER}__*",
                description="the demo agent may use the time tools",
                actor=actor,
            )
        held = Rule.objects.filter(tenant=tenant, effect=Rule.Effect.REQUIRE_APPROVAL)
        if not held.filter(resource=HELD_TOOL).exists():
            rule_create(
                tenant=tenant,
                agent=agent,
                effect=Rule.Effect.REQUIRE_APPROVAL,
                resource=HELD_TOOL,
                description="a reviewer approves each time conversion",
                actor=actor,
            )

        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(creds, handle)
        self.stdout.write(f"demo ready: tenant {TENANT}, agent {AGENT}, tool server {SERVER}")
