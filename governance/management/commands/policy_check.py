import json

from django.core.management.base import BaseCommand, CommandError

from governance.management.commands._util import agent_by_name, tenant_by_slug
from governance.selectors import policy_explain


class Command(BaseCommand):
    help = (
        "Print what the permission engine decides for a call, and why, rule by rule. "
        "Nothing is called or recorded. Exit status: 0 allow, 1 deny, 2 require_approval."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--agent", required=True)
        parser.add_argument("--tool", required=True, help="as the agent sees it: server__tool")
        parser.add_argument(
            "--args",
            dest="arguments",  # "args" is taken: Django passes positional arguments under it
            default="{}",
            help="the call's arguments as a JSON object",
        )

    def handle(self, *args, tenant, agent, tool, **options):
        tenant_obj = tenant_by_slug(tenant)
        agent_obj = agent_by_name(tenant_obj, agent)
        try:
            arguments = json.loads(options["arguments"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--args is not JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise CommandError("--args must be a JSON object")
        explanation = policy_explain(
            tenant=tenant_obj, agent=agent_obj, name=tool, arguments=arguments
        )
        self.stdout.write("\n".join(explanation.lines()))
        raise SystemExit({"allow": 0, "deny": 1}.get(explanation.decision.effect, 2))
