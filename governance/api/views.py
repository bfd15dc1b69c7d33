"""Thin DRF views over the policy selectors and services (docs/api.md, "REST API").

For the tenant's members (``TenantAPIView``): reviewers read and check the policy, admins
replace it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

import yaml
from django.conf import settings
from django.http import HttpResponse
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, ParseError
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from governance.engine.policy import Explanation
from governance.models import Agent, Rule
from governance.selectors import policy_explain
from governance.services.policy import PolicyImportError, policy_export, policy_import
from orchestrator.api import TenantAPIView

YAML_CONTENT_TYPE = "application/yaml; charset=utf-8"


# --- parsing -----------------------------------------------------------------------------------
class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body too large"
    default_code = "too_large"


def _errors(*errors: tuple[str, str]) -> dict[str, list[dict[str, str]]]:
    return {"errors": [{"location": where, "message": message} for where, message in errors]}


def _read_text(stream: IO[bytes], parser_context: Mapping[str, Any] | None) -> str:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    raw = stream.read() if limit is None else stream.read(limit + 1)
    if limit is not None and len(raw) > limit:
        raise PayloadTooLarge(f"request body above {limit} bytes")
    encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ParseError(_errors(("document", f"not valid {encoding}: {exc.reason}"))) from None


class PolicyYAMLParser(BaseParser):
    """A YAML policy document, passed through as text: ``policy_import`` parses it itself and
    reports each problem with its location."""

    media_type = "application/yaml"

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> str:
        return _read_text(stream, parser_context)


class PolicyTextYAMLParser(PolicyYAMLParser):
    media_type = "text/yaml"


class PolicyJSONParser(BaseParser):
    """A JSON policy document, handed on as the equivalent YAML text.

    JSON is YAML 1.2, but PyYAML reads YAML 1.1: it refuses tab indentation and reads ``1e5``
    as a string. Parsing with ``json`` first keeps the document's meaning exactly.
    """

    media_type = "application/json"

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> str:
        text = _read_text(stream, parser_context)
        if not text.strip():
            return ""
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            raise ParseError(_errors((where, f"not valid JSON: {exc.msg}"))) from None
        except (ValueError, RecursionError) as exc:
            raise ParseError(_errors(("document", f"not valid JSON: {exc}"))) from None
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# --- serializers -------------------------------------------------------------------------------
class PolicyCheckSerializer(serializers.Serializer[dict[str, Any]]):
    agent = serializers.CharField(max_length=100)
    tool = serializers.CharField()
    kind = serializers.ChoiceField(choices=Rule.ResourceKind.values, default="tool")
    arguments = serializers.DictField(default=dict, allow_null=True)

    def validate_arguments(self, value: dict[str, Any] | None) -> dict[str, Any]:
        return {} if value is None else value  # as in tools/call: null means no arguments

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A misspelt key ("args") would otherwise be dropped silently and answer another question.
        expected = ", ".join(self.fields)
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {k: [f"unknown field; send {expected}"] for k in unknown}
            )
        return attrs


class PolicyImportQuerySerializer(serializers.Serializer[dict[str, Any]]):
    dry_run = serializers.BooleanField(default=False)


def explanation_data(explanation: Explanation) -> dict[str, Any]:
    decision = explanation.decision
    return {
        "decision": str(decision.effect),
        "allowed": decision.allowed,
        "rule_id": decision.rule_id,
        "reason": decision.reason,
        "shadow": decision.shadow_record(),
        "explanation": explanation.lines(),
        "rules": [
            {
                "rule_id": trace.rule_id,
                "effect": str(trace.effect),
                "shadow": trace.shadow,
                "description": trace.description,
                "active": trace.active,
                "holds": trace.holds,
                "conditions": list(trace.conditions),
            }
            for trace in explanation.rules
        ],
    }


# --- views -------------------------------------------------------------------------------------


class PolicyCheckView(TenantAPIView):
    """What the policy decides for one call, and why, rule by rule. Nothing is called or
    recorded."""

    parser_classes = [JSONParser]

    def post(self, request: Request, slug: str) -> Response:
        tenant = self.tenant
        body = PolicyCheckSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            agent = Agent.objects.get(tenant=tenant, name=data["agent"])
        except Agent.DoesNotExist:
            raise NotFound(f"no agent {data['agent']!r} in tenant {tenant.slug!r}") from None
        explanation = policy_explain(
            tenant=tenant,
            agent=agent,
            name=data["tool"],
            arguments=data["arguments"],
            kind=data["kind"],
        )
        return Response(explanation_data(explanation))


class PolicyView(TenantAPIView):
    """The tenant's policy as code: GET exports it as YAML, PUT replaces it with a document."""

    roles = {"PUT": "admin"}

    parser_classes = [PolicyYAMLParser, PolicyTextYAMLParser, PolicyJSONParser]

    def get(self, request: Request, slug: str) -> HttpResponse:
        return HttpResponse(policy_export(tenant=self.tenant), content_type=YAML_CONTENT_TYPE)

    def put(self, request: Request, slug: str) -> Response:
        tenant = self.tenant
        query = PolicyImportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        dry_run: bool = query.validated_data["dry_run"]
        text = request.data
        if not isinstance(text, str) or not text.strip():
            # An empty document is a valid, empty policy: too easy to send by mistake.
            message = "empty body: send a policy document (an empty policy is `format: 1`)"
            return Response(_errors(("document", message)), status=status.HTTP_400_BAD_REQUEST)
        try:
            summary = policy_import(
                tenant=tenant, text=text, dry_run=dry_run, actor=request.user.get_username()
            )
        except PolicyImportError as exc:
            return Response(_errors(*exc.errors), status=status.HTTP_400_BAD_REQUEST)
        return Response({"roles": summary.roles, "rules": summary.rules, "dry_run": dry_run})
