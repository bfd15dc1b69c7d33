import sys

from django.core.management.base import BaseCommand, CommandError

from governance.management.commands._util import cli_actor, tenant_by_slug
from governance.services.policy import PolicyImportError, policy_import


class Command(BaseCommand):
    help = (
        "Make a tenant's roles and rules exactly what a YAML file says (see policy_export). "
        "Everything is validated first; nothing changes unless all of it is valid."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="a YAML file, or - for stdin")
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--dry-run", action="store_true", help="validate only")

    def handle(self, *args, file, tenant, dry_run, **options):
        tenant_obj = tenant_by_slug(tenant)
        if file == "-":
            text = sys.stdin.read()
        else:
            try:
                with open(file, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as exc:
                raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        try:
            summary = policy_import(
                tenant=tenant_obj, text=text, dry_run=dry_run, actor=cli_actor()
            )
        except PolicyImportError as exc:
            raise CommandError(f"{file} is not a valid policy; nothing changed:\n{exc}") from None
        self.stdout.write("valid; nothing changed (dry run)" if dry_run else f"imported: {summary}")
