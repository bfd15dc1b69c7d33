from django.core.management.base import BaseCommand

from audit.services import checkpoint_create
from governance.management.commands._util import tenant_by_slug
from governance.models import Tenant


class Command(BaseCommand):
    help = "Sign each tenant's audit chain head now (or one tenant's, --tenant)."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="only this tenant (slug)")

    def handle(self, *args, tenant, **options):
        tenants = [tenant_by_slug(tenant)] if tenant else list(Tenant.objects.order_by("slug"))
        for each in tenants:
            checkpoint = checkpoint_create(tenant=each)
            if checkpoint is None:
                self.stdout.write(f"{each.slug}: empty chain, nothing to sign")
            else:
                self.stdout.write(
                    f"{each.slug}: checkpoint {checkpoint.id} signs seq {checkpoint.seq} "
                    f"({checkpoint.hash[:16]}…) with key {checkpoint.key_id}"
                )
