from __future__ import annotations

import getpass
import os

from django.core.management.base import CommandError

from governance.models import Agent, Role, Tenant


def cli_actor() -> str:
    """Who runs a management command, as its audit records name them: ``cli:<login>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # a container's uid with no passwd entry and no $USER
        return f"cli:uid {os.getuid()}"


def tenant_by_slug(slug: str) -> Tenant:
    try:
        return Tenant.objects.get(slug=slug)
    except Tenant.DoesNotExist:
        raise CommandError(
            f"no tenant {slug!r} (create it with: manage.py tenant_create {slug})"
        ) from None


def agent_by_name(tenant: Tenant, name: str) -> Agent:
    try:
        return Agent.objects.get(tenant=tenant, name=name)
    except Agent.DoesNotExist:
        raise CommandError(f"no agent {name!r} in tenant {tenant.slug!r}") from None


def key_values(pairs: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"{option} takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def role_by_name(tenant: Tenant, name: str) -> Role:
    try:
        return Role.objects.get(tenant=tenant, name=name)
    except Role.DoesNotExist:
        raise CommandError(
            f"no role {name!r} in tenant {tenant.slug!r} "
            f"(create it with: manage.py role_create --tenant {tenant.slug} {name})"
        ) from None
