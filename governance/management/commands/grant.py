from django.core.management.base import BaseCommand

from governance.management.commands._util import agent_by_name, tenant_by_slug
from governance.services.grants import grant_create


class Command(BaseCommand):
    help = "Allow an agent (or '*': every agent of the tenant) the tools matching a glob."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--agent", required=True, help="agent name, or '*' for every agent")
        parser.add_argument("--tool", required=True, help="glob over namespaced names: time__*")

    def handle(self, *args, tenant, agent, tool, **options):
        tenant_obj = tenant_by_slug(tenant)
        agent_obj = None if agent == "*" else agent_by_name(tenant_obj, agent)
        grant_create(tenant=tenant_obj, agent=agent_obj, tool_glob=tool)
        self.stdout.write(f"granted {tool!r} to {agent} in {tenant}")
