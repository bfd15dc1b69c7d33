from django.urls import path

from governance.api import views

app_name = "governance-api"

urlpatterns = [
    path("tenants/<slug:slug>/policy", views.PolicyView.as_view(), name="policy"),
    path("tenants/<slug:slug>/policy/check", views.PolicyCheckView.as_view(), name="policy-check"),
]
