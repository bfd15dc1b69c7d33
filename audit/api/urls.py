from django.urls import path

from audit.api import views

app_name = "audit-api"

urlpatterns = [
    path("tenants/<slug:slug>/audit/records", views.RecordListView.as_view(), name="records"),
    path(
        "tenants/<slug:slug>/audit/records/<int:seq>",
        views.RecordView.as_view(),
        name="record",
    ),
    path("tenants/<slug:slug>/audit/calls/<str:call_id>", views.CallView.as_view(), name="call"),
    path("tenants/<slug:slug>/audit/export", views.ExportView.as_view(), name="export"),
]
