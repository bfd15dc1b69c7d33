from django.urls import path

from governance.api import approvals, views

app_name = "governance-api"

urlpatterns = [
    path("tenants/<slug:slug>/policy", views.PolicyView.as_view(), name="policy"),
    path("tenants/<slug:slug>/policy/check", views.PolicyCheckView.as_view(), name="policy-check"),
    path(
        "tenants/<slug:slug>/approvals",
        approvals.ApprovalListView.as_view(),
        name="approvals",
    ),
    path(
        "tenants/<slug:slug>/approvals/<str:approval_id>",
        approvals.ApprovalView.as_view(),
        name="approval",
    ),
    path(
        "tenants/<slug:slug>/approvals/<str:approval_id>/decision",
        approvals.DecisionView.as_view(),
        name="approval-decision",
    ),
]
