from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from governance.management.commands._util import agent_by_name, cli_actor, tenant_by_slug
from governance.services.policy import role_create


class Command(BaseCommand):
    help = "Create a role and give it to agents; add its rules with rule_add --role."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--agents", nargs="*", default=[], help="agent names")
        parser.add_argument("--description", default="")

    def handle(self, *args, name, tenant, agents, description, **options):
        tenant_obj = tenant_by_slug(tenant)
        members = [agent_by_name(tenant_obj, a) for a in agents]
        try:
            role_create(
                tenant=tenant_obj,
                name=name,
                description=description,
                agents=members,
                actor=cli_actor(),
            )
        except IntegrityError:
            raise CommandError(f"role {name!r} exists already in tenant {tenant!r}") from None
        self.stdout.write(f"created role {tenant}/{name} held by {', '.join(agents) or 'nobody'}")
