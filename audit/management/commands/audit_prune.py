from django.core.management.base import BaseCommand

from audit.services import audit_prune, audit_prune_all
from governance.management.commands._util import tenant_by_slug


class Command(BaseCommand):
    help = (
        "Prune audit records past each tenant's retention period (Tenant.audit_retention_days), "
        "leaving a signed checkpoint. Celery beat runs this every AUDIT_PRUNE_SECONDS."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="only this tenant (slug)")

    def handle(self, *args, tenant, **options):
        results = [audit_prune(tenant=tenant_by_slug(tenant))] if tenant else audit_prune_all()
        for result in results:
            self.stdout.write(
                f"{result.tenant}: pruned {result.pruned} records"
                + (f" through seq {result.through_seq}" if result.pruned else "")
            )
