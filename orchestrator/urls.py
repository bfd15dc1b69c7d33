from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from orchestrator import http_mcp, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("mcp", http_mcp.mcp_endpoint, name="mcp"),
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path("dashboard/", include("governance.dashboard.urls")),
    path("api/v1/", include("governance.api.urls")),
    path("api/v1/", include("audit.api.urls")),
]
