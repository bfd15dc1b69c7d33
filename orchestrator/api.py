"""What every REST API view shares (governance/api, audit/api): a tenant's API, for its
members."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from governance.models import Membership, Tenant
from governance.selectors import tenant_access


class TenantAPIView(APIView):
    """An endpoint under ``tenants/<slug>/``, for the tenant's members (superusers are admins of
    every tenant), by HTTP Basic (CI, scripts, chat-ops) or the Django session (browser; CSRF
    applies). Basic comes first, so a request without credentials gets 401 with
    WWW-Authenticate. ``role`` is the least role the endpoint needs; per method, ``roles``.
    Someone who is not a member is told the tenant does not exist (404), as for one that
    does not: a tenant's name is not revealed to outsiders."""

    authentication_classes = [BasicAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    role: str = Membership.Role.REVIEWER
    roles: dict[str, str] = {}  # method (upper case) → least role, where it differs
    tenant: Tenant

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication and IsAuthenticated first
        slug = kwargs["slug"]
        access = tenant_access(user=request.user, slug=slug)
        if access is None:
            raise NotFound(f"no tenant {slug!r}")
        needed = self.roles.get(request.method or "", self.role)
        if not access.allows(needed):
            raise PermissionDenied(f"this needs the {needed} role in tenant {slug!r}")
        self.tenant = access.tenant
