"""Guardrail rows: the defaults a new tenant starts with, and validated writes."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from governance.engine.guardrails.base import ConfigError
from governance.engine.guardrails.pipeline import INLINE_CHECKS, SLOW_CHECKS, config_validate
from governance.models import Guardrail, Tenant
from governance.services.changes import SYSTEM, change_record, object_snapshot
from governance.services.versions import tenant_version_bump
from governance.slowchecks import slow_check_get

# What a new tenant gets: the inline checks on, cheapest and most protective first; the
# slow check present but off (it needs a Celery worker and costs a model run per call).
DEFAULT_GUARDRAILS: tuple[dict[str, Any], ...] = (
    {"name": "size", "stage": "both", "action": "block"},
    {"name": "schema", "stage": "input", "action": "block"},
    {"name": "deny_patterns", "stage": "both", "action": "block", "config": {"patterns": []}},
    {"name": "secrets", "stage": "both", "action": "redact"},
    {"name": "pii", "stage": "output", "action": "redact"},
    {"name": "injection", "stage": "output", "action": "redact"},
    {
        "name": "injection_similarity",
        "stage": "output",
        "action": "flag",
        "mode": "post_hoc",
        "failure_mode": "open",
        "enabled": False,
    },
)


@transaction.atomic
def guardrail_defaults_create(*, tenant: Tenant, actor: str = SYSTEM) -> list[Guardrail]:
    """Give a tenant the default checks it does not have a tenant-wide row for yet."""
    have = set(
        Guardrail.objects.filter(tenant=tenant, agent=None, tool="").values_list("name", flat=True)
    )
    created = [
        Guardrail.objects.create(tenant=tenant, **defaults)
        for defaults in DEFAULT_GUARDRAILS
        if defaults["name"] not in have
    ]
    if created:
        tenant_version_bump(tenant_id=tenant.id)
    for guardrail in created:
        change_record(actor=actor, action="created", obj=guardrail, before=None)
    return created


def guardrail_validate(guardrail: Guardrail) -> None:
    """Raise ValidationError, by field, for a row the engine could not use."""
    errors: dict[str, str] = {}
    if guardrail.name in INLINE_CHECKS:
        stages = INLINE_CHECKS[guardrail.name].stages
        wanted = {"input", "output"} if guardrail.stage == "both" else {guardrail.stage}
        if not wanted <= {str(s) for s in stages}:
            errors["stage"] = f"{guardrail.name} runs at {', '.join(sorted(stages))} only"
    elif guardrail.name not in SLOW_CHECKS:
        errors["name"] = f"unknown check {guardrail.name!r}"
    if not isinstance(guardrail.config, dict):
        errors["config"] = "an object of settings, {} for the defaults"
    elif "name" not in errors:
        try:
            config_validate(guardrail.name, guardrail.config)
            slow = slow_check_get(guardrail.name)
            if slow is not None:
                slow.configure(guardrail.config)
        except ConfigError as exc:
            errors["config"] = str(exc)
    if guardrail.agent_id is not None and guardrail.agent.tenant_id != guardrail.tenant_id:
        errors["agent"] = "an agent of the same tenant"
    if guardrail.timeout_seconds <= 0 or guardrail.timeout_seconds > 60:
        errors["timeout_seconds"] = "between 0 and 60 seconds"
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def guardrail_save(*, guardrail: Guardrail, actor: str = SYSTEM) -> Guardrail:
    """Create or change a guardrail row (validated as the admin's form validates it)."""
    guardrail.full_clean()
    guardrail_validate(guardrail)
    stored = (
        Guardrail.objects.select_for_update().filter(pk=guardrail.pk).first()
        if guardrail.pk
        else None
    )
    before = object_snapshot(stored) if stored else None
    guardrail.save()
    tenant_version_bump(tenant_id=guardrail.tenant_id)
    change_record(
        actor=actor, action="changed" if before else "created", obj=guardrail, before=before
    )
    return guardrail
