from django.contrib import admin

from audit.models import AuditRecord


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    """Read-only: the trail is written by the gateway alone."""

    list_display = [
        "created_at",
        "kind",
        "tenant",
        "agent_name",
        "tool",
        "decision",
        "rule_id",
        "outcome",
        "latency_ms",
    ]
    list_filter = ["tenant", "kind", "decision", "outcome", "transport", "protocol_era"]
    search_fields = ["tool", "agent_name", "reason", "error", "call_id", "=rule_id"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in AuditRecord._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
