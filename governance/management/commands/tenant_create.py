from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from governance.management.commands._util import cli_actor
from governance.services.agents import tenant_create


class Command(BaseCommand):
    help = "Create a tenant."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")

    def handle(self, *args, slug, name, **options):
        try:
            tenant = tenant_create(slug=slug, name=name, actor=cli_actor())
        except IntegrityError:
            raise CommandError(f"tenant {slug!r} exists already") from None
        self.stdout.write(f"created tenant {tenant.slug}")
