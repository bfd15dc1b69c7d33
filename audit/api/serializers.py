"""Query parameters in, records out: the audit API's serializers and its cursor pagination."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request

from audit.chain import timestamp
from audit.models import AuditRecord
from audit.selectors import AuditFilters

MAX_PAGE_SIZE = 1000
_FILTERS = {f.name for f in dataclasses.fields(AuditFilters)}


class FilterQuerySerializer(serializers.Serializer[dict[str, Any]]):
    """The search filters, shared by the list and the export."""

    agent = serializers.CharField(max_length=100, required=False)
    tool = serializers.CharField(max_length=300, required=False)
    decision = serializers.ChoiceField(choices=AuditRecord.Decision.values, required=False)
    outcome = serializers.ChoiceField(choices=AuditRecord.Outcome.values, required=False)
    kind = serializers.ChoiceField(choices=AuditRecord.Kind.values, required=False)
    call_id = serializers.UUIDField(required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    q = serializers.CharField(max_length=200, required=False)

    # Read by DRF itself, not by us; any other parameter is refused.
    passed_through: Sequence[str] = ()

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        # A misspelt filter ("agnet") would otherwise be ignored and select everything.
        known = (*self.fields, *self.passed_through)
        message = f"unknown parameter; use {', '.join(known)}"
        unknown = {name: [message] for name in sorted(set(data) - set(known))}
        try:
            values = super().to_internal_value(data)
        except ValidationError as exc:
            raise ValidationError({**exc.detail, **unknown}) from None  # type: ignore[dict-item]
        if unknown:
            raise ValidationError(unknown)
        return values

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since, until = attrs.get("since"), attrs.get("until")
        if since and until and until <= since:
            raise ValidationError({"until": ["must be later than since"]})
        return attrs

    @property
    def filters(self) -> AuditFilters:
        return AuditFilters(**{k: v for k, v in self.validated_data.items() if k in _FILTERS})


class ListQuerySerializer(FilterQuerySerializer):
    cursor = serializers.CharField(required=False)  # checked by the paginator
    page_size = serializers.IntegerField(min_value=1, max_value=MAX_PAGE_SIZE, required=False)
    passed_through = ("format",)  # DRF's renderer choice: ?format=json


class ExportQuerySerializer(FilterQuerySerializer):
    format = serializers.ChoiceField(choices=["jsonl", "csv"], default="jsonl")


class TimestampField(serializers.Field[datetime, str, str, Any]):
    """A time as the chain hashes it: UTC, always with microseconds."""

    def to_representation(self, value: datetime) -> str:
        return timestamp(value)


class AuditRecordSerializer(serializers.ModelSerializer[AuditRecord]):
    started_at = TimestampField(read_only=True)
    created_at = TimestampField(read_only=True)

    class Meta:
        model = AuditRecord
        fields = (
            "seq",
            "call_id",
            "kind",
            "agent_id",
            "agent_name",
            "transport",
            "protocol_era",
            "protocol_version",
            "request_id",
            "tool",
            "arguments",
            "decision",
            "reason",
            "rule_id",
            "shadow",
            "policy_version",
            "guardrails",
            "flagged",
            "outcome",
            "error",
            "result_digest",
            "latency_us",
            "started_at",
            "created_at",
            "actor",
            "subject",
            "diff",
            "prev_hash",
            "hash",
        )
        read_only_fields = fields


class RecordPagination(CursorPagination):
    """Newest first; ``seq`` is unique within a tenant, so pages neither skip nor repeat."""

    ordering = "-seq"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def decode_cursor(self, request: Request) -> Cursor | None:
        try:
            return super().decode_cursor(request)
        except NotFound:  # DRF answers 404; it is a bad parameter
            message = "invalid cursor: pass the `next` or `previous` link of a page as it is"
            raise ValidationError({"cursor": [message]}) from None
