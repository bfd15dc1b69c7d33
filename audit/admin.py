from django.contrib import admin
from django.utils.html import format_html, format_html_join

from audit.models import AuditRecord, ChainHead, Checkpoint


class ReadOnlyAdmin(admin.ModelAdmin):
    """The trail is written by the gateway and its services alone (append-only)."""

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields] + list(self.readonly_fields)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "seq",
        "created_at",
        "kind",
        "tenant",
        "agent_name",
        "tool",
        "decision",
        "rule_id",
        "outcome",
        "flagged",
        "actor",
        "latency_us",
    ]
    list_filter = ["tenant", "kind", "decision", "outcome", "flagged", "transport", "protocol_era"]
    search_fields = ["tool", "agent_name", "reason", "error", "subject", "actor", "=call_id"]
    date_hierarchy = "created_at"
    ordering = ["-id"]
    readonly_fields = ["story"]

    @admin.display(description="records of this call")
    def story(self, record: AuditRecord) -> str:
        """Every record of the call (intent, verdicts, outcome), in chain order."""
        siblings = AuditRecord.objects.filter(
            tenant_id=record.tenant_id, call_id=record.call_id
        ).order_by("seq")
        rows = format_html_join(
            "",
            "<tr><td><a href='../../{}/change/'>#{}</a></td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td><td>{}</td></tr>",
            (
                (r.pk, r.seq, r.created_at, r.kind, r.decision, r.outcome, r.reason or r.error)
                for r in siblings
            ),
        )
        return format_html(
            "<table><tr><th>seq</th><th>at</th><th>kind</th><th>decision</th><th>outcome</th>"
            "<th>reason</th></tr>{}</table>",
            rows,
        )


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "seq", "reason", "signed_at", "key_id"]
    list_filter = ["tenant", "reason"]


@admin.register(ChainHead)
class ChainHeadAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "seq", "signed_at", "key_id"]
