from django.core.management.base import BaseCommand

from governance.management.commands._util import agent_by_name, cli_actor, tenant_by_slug
from governance.services.agents import token_revoke


class Command(BaseCommand):
    help = (
        "Revoke an agent's tokens (all, or those starting with --prefix); live connections close."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--agent", required=True)
        parser.add_argument("--prefix", default="")

    def handle(self, *args, tenant, agent, prefix, **options):
        agent_obj = agent_by_name(tenant_by_slug(tenant), agent)
        tokens = agent_obj.tokens.filter(revoked_at__isnull=True, prefix__startswith=prefix[:10])
        count = 0
        for token in tokens:
            token_revoke(token=token, actor=cli_actor())
            count += 1
        self.stdout.write(f"revoked {count} token(s) of {tenant}/{agent}")
