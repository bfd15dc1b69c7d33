import argparse
import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from governance.management.commands._util import (
    agent_by_name,
    cli_actor,
    role_by_name,
    tenant_by_slug,
)
from governance.models import Rule
from governance.services.policy import rule_create


class Command(BaseCommand):
    help = (
        "Add a permission rule: for one agent (--agent), a role (--role) or every agent "
        "(neither). Prints the new rule's id. See docs/policy.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True)
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--agent", help="one agent; '*' (or leaving both out): every agent")
        target.add_argument("--role")
        parser.add_argument("--effect", choices=Rule.Effect.values, default=Rule.Effect.ALLOW)
        parser.add_argument("--tool", required=True, help="a glob over server__tool names")
        parser.add_argument(
            "--when", default="[]", help='conditions as JSON: [{"path","op","value"}, ...]'
        )
        parser.add_argument("--shadow", action="store_true", help="record, never enforce")
        parser.add_argument("--valid-from", type=_datetime)
        parser.add_argument("--valid-until", type=_datetime)
        parser.add_argument("--description", default="")

    def handle(self, *args, tenant, agent, role, effect, tool, when, shadow, **options):
        tenant_obj = tenant_by_slug(tenant)
        try:
            conditions = json.loads(when)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--when is not JSON: {exc}") from None
        try:
            rule = rule_create(
                tenant=tenant_obj,
                agent=agent_by_name(tenant_obj, agent) if agent and agent != "*" else None,
                role=role_by_name(tenant_obj, role) if role else None,
                effect=effect,
                resource=tool,
                conditions=conditions,
                shadow=shadow,
                valid_from=options["valid_from"],
                valid_until=options["valid_until"],
                description=options["description"],
                actor=cli_actor(),
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(f"rule {rule.id}: {rule}")


def _datetime(value: str):
    parsed = parse_datetime(value)
    if parsed is None or parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 date-time with a time zone, e.g. 2026-12-31T18:00Z"
        )
    return parsed
