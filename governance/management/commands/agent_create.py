from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError
from django.utils import timezone

from governance.management.commands._util import cli_actor, tenant_by_slug
from governance.services.agents import agent_create, token_issue


class Command(BaseCommand):
    help = "Create an agent and issue its first API token, printed alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--description", default="")
        parser.add_argument("--expires-in-days", type=float, default=None)
        parser.add_argument(
            "--owner", help="the username of the person responsible for the agent (four eyes)"
        )

    def handle(self, *args, name, tenant, description, expires_in_days, owner, **options):
        tenant_obj = tenant_by_slug(tenant)
        owner_user = None
        if owner:
            owner_user = get_user_model().objects.filter(username=owner).first()
            if owner_user is None:
                raise CommandError(f"no user {owner!r} (create one with: manage.py member_add)")
        try:
            agent = agent_create(
                tenant=tenant_obj,
                name=name,
                description=description,
                owner=owner_user,
                actor=cli_actor(),
            )
        except IntegrityError:
            raise CommandError(f"agent {name!r} exists already in tenant {tenant!r}") from None
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        issued = token_issue(agent=agent, expires_at=expires_at, actor=cli_actor())
        self.stdout.write(f"created agent {tenant}/{name}; its token (shown once):")
        self.stdout.write(issued.token)
