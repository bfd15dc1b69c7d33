"""What every REST API view shares (governance/api, audit/api)."""

from __future__ import annotations

from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAdminUser
from rest_framework.views import APIView

from governance.models import Tenant


class StaffAPIView(APIView):
    """Staff only, by HTTP Basic (CI, scripts) or the Django session (browser; CSRF applies).
    Basic comes first, so a request without credentials gets 401 with WWW-Authenticate."""

    authentication_classes = [BasicAuthentication, SessionAuthentication]
    permission_classes = [IsAdminUser]


def tenant_or_404(slug: str) -> Tenant:
    try:
        return Tenant.objects.get(slug=slug)
    except Tenant.DoesNotExist:
        raise NotFound(f"no tenant {slug!r}") from None
