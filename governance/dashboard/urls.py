from django.urls import path

from governance.dashboard import stream, views

app_name = "dashboard"

urlpatterns = [
    path("", views.index, name="index"),
    path("<slug:slug>/", views.overview, name="overview"),
    path("<slug:slug>/feed", views.feed, name="feed"),
    path("<slug:slug>/stream", stream.stream, name="stream"),
    path("<slug:slug>/approvals", views.approvals, name="approvals"),
    path("<slug:slug>/approvals/queue", views.approvals_queue, name="approvals-queue"),
    path(
        "<slug:slug>/approvals/<uuid:approval_id>/decide",
        views.approval_decision,
        name="approval-decide",
    ),
    path("<slug:slug>/audit", views.audit, name="audit"),
    path("<slug:slug>/calls/<uuid:call_id>", views.call, name="call"),
    path("<slug:slug>/agents", views.agents, name="agents"),
    path("<slug:slug>/tokens/<int:token_id>/revoke", views.token_revoke, name="token-revoke"),
    path("<slug:slug>/violations", views.violations, name="violations"),
    path("<slug:slug>/alerts/<int:alert_id>/resolve", views.alert_resolve, name="alert-resolve"),
]
