from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from governance.models import GatewayNode
from governance.services.nodes import nodes_recover


class Command(BaseCommand):
    help = (
        "List the gateway processes by their heartbeat; with --recover, record as interrupted "
        "the calls dead ones left unanswered (Celery beat does it every NODE_SWEEP_SECONDS)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--recover", action="store_true")

    def handle(self, *args, recover, **options):
        if recover:
            count = nodes_recover(lease_seconds=settings.NODE_LEASE_SECONDS)
            self.stdout.write(f"recorded {count} call(s) as interrupted")
        now = timezone.now()
        for node in GatewayNode.objects.order_by("name", "started_at"):
            state = "dead" if node.dead_at else "live"
            seen = (now - node.seen_at).total_seconds()
            self.stdout.write(
                f"{node.name}\t{state}\tstarted {node.started_at:%Y-%m-%d %H:%M:%S}\t"
                f"seen {seen:.1f} s ago\toldest call in flight since "
                f"{node.calls_since:%H:%M:%S.%f}"
            )
