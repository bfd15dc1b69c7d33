from django.contrib import admin
from django.urls import include, path

from orchestrator import http_mcp, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("mcp", http_mcp.mcp_endpoint, name="mcp"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("governance.api.urls")),
    path("api/v1/", include("audit.api.urls")),
]
