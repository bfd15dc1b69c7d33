import json

from django.core.management.base import BaseCommand

from audit.selectors import audit_record_as_dict, audit_record_list
from governance.management.commands._util import tenant_by_slug


class Command(BaseCommand):
    help = "Print a tenant's latest audit records, oldest first (--json: one object a line)."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True)
        parser.add_argument("-n", type=int, default=20, help="how many records (default 20)")
        parser.add_argument("--json", dest="as_json", action="store_true")

    def handle(self, *args, tenant, n, as_json, **options):
        records = audit_record_list(tenant=tenant_by_slug(tenant), limit=n)
        for record in records:
            row = audit_record_as_dict(record)
            if as_json:
                self.stdout.write(json.dumps(row, ensure_ascii=False, sort_keys=True))
            else:
                self.stdout.write(
                    f"{row['created_at']} {row['kind']:<7} {row['agent']:<16} {row['tool']:<32} "
                    f"{row['decision']:<16} {row['outcome'] or '-':<13} {row['reason']}"
                )
