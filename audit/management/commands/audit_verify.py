import os
import time

from django.core.management.base import BaseCommand

from audit.verify import chain_verify
from governance.management.commands._util import tenant_by_slug
from governance.models import Tenant


class Command(BaseCommand):
    help = (
        "Verify every tenant's audit chain (or one, --tenant): each record's hash, each link, "
        "the signed checkpoints and head. Prints the first broken link; exits 1 if any."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="only this tenant (slug)")
        parser.add_argument(
            "--jobs",
            type=int,
            default=min(4, os.cpu_count() or 1),
            help="processes that share a long chain (default: the CPUs, at most 4)",
        )

    def handle(self, *args, tenant, jobs, **options):
        tenants = [tenant_by_slug(tenant)] if tenant else list(Tenant.objects.order_by("slug"))
        broken = 0
        for each in tenants:
            started = time.perf_counter()
            report = chain_verify(tenant=each, jobs=jobs)
            seconds = time.perf_counter() - started
            span = f"seq {report.first_seq}..{report.last_seq}" if report.records else "empty"
            if report.ok:
                self.stdout.write(
                    f"{each.slug}: OK, {report.records} records ({span}), "
                    f"{report.checkpoints} checkpoints, signed head; {seconds:.2f} s"
                )
            else:
                broken += 1
                self.stdout.write(f"{each.slug}: BROKEN at {report.broken}")
        if broken:
            self.stderr.write(f"{broken} of {len(tenants)} chains are broken")
            raise SystemExit(1)
