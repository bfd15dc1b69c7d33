from django.core.management.base import BaseCommand

from governance.management.commands._util import tenant_by_slug
from governance.services.policy import policy_export


class Command(BaseCommand):
    help = "Write a tenant's roles and rules as YAML (to stdout, or --output FILE)."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--output", "-o")

    def handle(self, *args, tenant, output, **options):
        text = policy_export(tenant=tenant_by_slug(tenant))
        if output:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text)
        else:
            self.stdout.write(text, ending="")
