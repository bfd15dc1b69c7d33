"""The approvals API (docs/api.md, "Approvals API"): list a tenant's requests and decide them,
for chat-ops and ticketing integrations. Reviewers and admins of the tenant, as the rest of the
API; the four-eyes rule and the audit record come with the service, as in the dashboard."""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from governance.models import ApprovalRequest
from governance.selectors import approval_get, approval_list
from governance.services.approvals import ApprovalError, FourEyesViolation, approval_decide
from orchestrator.api import TenantAPIView


class ApprovalSerializer(serializers.ModelSerializer[ApprovalRequest]):
    agent = serializers.CharField(source="agent_name")
    decided_by = serializers.CharField(source="decided_by_name")

    class Meta:
        model = ApprovalRequest
        fields = [
            "id",
            "status",
            "tool",
            "agent",
            "arguments",
            "arguments_digest",
            "rule_id",
            "reason",
            "policy_version",
            "call_id",
            "created_at",
            "expires_at",
            "decided_at",
            "decided_by",
            "comment",
            "released_at",
        ]


class ListQuerySerializer(serializers.Serializer[dict[str, Any]]):
    status = serializers.ChoiceField(choices=ApprovalRequest.Status.values, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - {"status", "cursor", "page_size"})
        if unknown:
            raise ValidationError(
                {k: ["unknown parameter; use status, cursor, page_size"] for k in unknown}
            )
        return attrs


class DecisionSerializer(serializers.Serializer[dict[str, Any]]):
    decision = serializers.ChoiceField(choices=["approve", "deny"])
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    # The digest the integration showed its reviewer: the decision applies only to it.
    arguments_digest = serializers.RegexField(r"^[0-9a-f]{64}$", required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            expected = ", ".join(self.fields)
            raise ValidationError({k: [f"unknown field; send {expected}"] for k in unknown})
        return attrs


class ApprovalPagination(CursorPagination):
    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class ApprovalListView(TenantAPIView):
    """The tenant's approval requests, newest first; ``?status=pending`` is the queue."""

    def get(self, request: Request, slug: str) -> Response:
        query = ListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        approvals = approval_list(tenant=self.tenant, status=query.validated_data.get("status"))
        paginator = ApprovalPagination()
        page = paginator.paginate_queryset(approvals, request, view=self)
        return paginator.get_paginated_response(ApprovalSerializer(page, many=True).data)


def _approval(view: TenantAPIView, approval_id: str) -> ApprovalRequest:
    try:
        parsed = uuid.UUID(approval_id)
    except ValueError:
        raise NotFound(f"no approval request {approval_id!r}") from None
    approval = approval_get(tenant=view.tenant, approval_id=parsed)
    if approval is None:
        raise NotFound(f"no approval request {approval_id!r} in tenant {view.tenant.slug!r}")
    return approval


class ApprovalView(TenantAPIView):
    def get(self, request: Request, slug: str, approval_id: str) -> Response:
        return Response(ApprovalSerializer(_approval(self, approval_id)).data)


class DecisionView(TenantAPIView):
    """Approve or deny a pending request, with a comment. 409: no longer pending (decided,
    expired, cancelled, interrupted) or another digest; 403: four eyes."""

    parser_classes = [JSONParser]

    def post(self, request: Request, slug: str, approval_id: str) -> Response:
        approval = _approval(self, approval_id)
        body = DecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            decided = approval_decide(
                approval=approval,
                user=request.user,
                approve=data["decision"] == "approve",
                comment=data["comment"],
                digest=data.get("arguments_digest"),
            )
        except FourEyesViolation as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
        except ApprovalError as exc:  # closed, or another digest
            raise Conflict(str(exc)) from None
        return Response(ApprovalSerializer(decided).data)
