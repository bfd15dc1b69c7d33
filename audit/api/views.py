"""Thin DRF views over the audit selectors and the export (docs/api.md, "Audit API").

For the tenant's members (reviewers and admins, ``TenantAPIView``). Every query is scoped
to the tenant named in the URL.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from audit.api.serializers import (
    AuditRecordSerializer,
    ExportQuerySerializer,
    ListQuerySerializer,
    RecordPagination,
)
from audit.export import aiterate, audit_export
from audit.selectors import audit_call_story, audit_record_get, audit_record_search
from orchestrator.api import TenantAPIView

_Query = TypeVar("_Query", bound=Serializer[Any])


def _query(serializer: type[_Query], request: Request) -> _Query:
    query = serializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query


class RecordListView(TenantAPIView):
    """The tenant's records matching the filters, newest first, a cursor page at a time."""

    def get(self, request: Request, slug: str) -> Response:
        tenant = self.tenant
        query = _query(ListQuerySerializer, request)
        records = audit_record_search(tenant=tenant, filters=query.filters)
        paginator = RecordPagination()
        page = paginator.paginate_queryset(records, request, view=self)
        return paginator.get_paginated_response(AuditRecordSerializer(page, many=True).data)


class RecordView(TenantAPIView):
    def get(self, request: Request, slug: str, seq: int) -> Response:
        tenant = self.tenant
        record = audit_record_get(tenant=tenant, seq=seq)
        if record is None:
            raise NotFound(f"no record {seq} in tenant {tenant.slug!r}")
        return Response(AuditRecordSerializer(record).data)


class CallView(TenantAPIView):
    """One call's story: its intent, guardrail verdicts and outcome, in the order written."""

    def get(self, request: Request, slug: str, call_id: str) -> Response:
        tenant = self.tenant
        try:
            parsed = uuid.UUID(call_id)
        except ValueError:
            raise ValidationError({"call_id": ["must be a UUID"]}) from None
        records = audit_call_story(tenant=tenant, call_id=parsed)
        if not records:
            raise NotFound(f"no call {call_id} in tenant {tenant.slug!r}")
        data = AuditRecordSerializer(records, many=True).data
        return Response({"call_id": str(parsed), "records": data})


class ExportView(TenantAPIView):
    """The matching records as a JSONL or CSV download that carries its chain proof."""

    def perform_content_negotiation(
        self, request: Request, force: bool = False
    ) -> tuple[BaseRenderer, str]:
        # ?format= names the export's format here, not a DRF renderer; errors are JSON.
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    def get(self, request: Request, slug: str) -> StreamingHttpResponse:
        tenant = self.tenant
        query = _query(ExportQuerySerializer, request)
        export = audit_export(
            tenant=tenant, filters=query.filters, format=query.validated_data["format"]
        )
        # Under ASGI only an async iterator streams; the sync one serves WSGI (and the test
        # client) without buffering.
        is_asgi = isinstance(request._request, ASGIRequest)
        body = aiterate(export.chunks) if is_asgi else export.chunks
        response = StreamingHttpResponse(body, content_type=export.content_type)
        response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
        response["Cache-Control"] = "no-store"
        return response
