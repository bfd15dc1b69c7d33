import json

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from audit.models import AuditRecord, ChainHead, Checkpoint


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the gateway and its services write alone (the append-only trail, the gateways'
    heartbeats): shown, never added, changed or deleted here."""

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields] + list(self.readonly_fields)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# Records of acts (a person's or the gateway's) rather than of a call's steps: they say who
# (actor), to what (subject) and what changed (diff).
ACTS = (AuditRecord.Kind.ADMIN, AuditRecord.Kind.APPROVAL)


def record_result(record: AuditRecord) -> str:
    """What came of the step: a call's outcome, an approval's change of status
    ("pending → approved"), or an admin record's action ("changed")."""
    if record.kind == AuditRecord.Kind.APPROVAL:
        before, after = (record.diff or {}).get("status") or [None, None]
        if not after:
            return ""
        return f"{before} → {after}" if before else f"requested ({after})"
    if record.kind == AuditRecord.Kind.ADMIN:
        return record.reason
    return record.outcome


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "seq",
        "created_at",
        "kind",
        "tenant",
        "agent_name",
        "target",
        "decision",
        "rule_id",
        "result",
        "flagged",
        "actor",
        "latency_us",
    ]
    list_filter = ["tenant", "kind", "decision", "outcome", "flagged", "transport", "protocol_era"]
    search_fields = ["tool", "agent_name", "reason", "error", "subject", "actor", "=call_id"]
    date_hierarchy = "created_at"
    ordering = ["-id"]
    readonly_fields = ["changes", "story"]

    def get_fields(self, request, obj=None):
        # Every field, the diff shown readable where it stands, then the call's records.
        names = [f.name for f in self.model._meta.fields]
        return [("changes" if name == "diff" else name) for name in names] + ["story"]

    @admin.display(description="tool / subject", ordering="tool")
    def target(self, record: AuditRecord) -> str:
        return record.tool or record.subject

    @admin.display(description="outcome", ordering="outcome")
    def result(self, record: AuditRecord) -> str:
        return record_result(record)

    @admin.display(description="diff")
    def changes(self, record: AuditRecord) -> str:
        if not record.diff:
            return "-"
        text = json.dumps(record.diff, indent=2, ensure_ascii=False)
        return format_html("<pre>{}</pre>", text)

    @admin.display(description="records of this call")
    def story(self, record: AuditRecord) -> str:
        """Every record of the call (intent, verdicts, approval steps, outcome), in chain
        order."""
        siblings = AuditRecord.objects.filter(
            tenant_id=record.tenant_id, call_id=record.call_id
        ).order_by("seq")
        rows = format_html_join(
            "",
            "<tr><td><a href='../../{}/change/'>#{}</a></td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    r.pk,
                    r.seq,
                    r.created_at,
                    r.kind,
                    r.decision,
                    record_result(r),
                    r.actor if r.kind in ACTS else "",
                    "" if r.kind == AuditRecord.Kind.ADMIN else r.reason or r.error,
                )
                for r in siblings
            ),
        )
        return format_html(
            "<table><tr><th>seq</th><th>at</th><th>kind</th><th>decision</th><th>outcome</th>"
            "<th>by</th><th>reason</th></tr>{}</table>",
            rows,
        )


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "seq", "reason", "signed_at", "key_id"]
    list_filter = ["tenant", "reason"]
    search_fields = ["tenant__slug", "=key_id"]
    ordering = ["tenant", "-seq"]


@admin.register(ChainHead)
class ChainHeadAdmin(ReadOnlyAdmin):
    """One row per tenant: found by its slug, nothing to filter."""

    list_display = ["tenant", "seq", "signed_at", "key_id"]
    search_fields = ["tenant__slug", "=key_id"]
