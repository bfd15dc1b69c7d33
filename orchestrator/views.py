from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from governance.models import Agent, ToolServer


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The landing page; the compliance dashboard grows from here."""
    context = {
        "agents": Agent.objects.select_related("tenant").order_by("tenant__slug", "name"),
        "servers": ToolServer.objects.select_related("tenant").prefetch_related("tools"),
        "mcp_ws": request.build_absolute_uri("/mcp/ws").replace("http", "ws", 1),
        "mcp_http": request.build_absolute_uri("/mcp"),
    }
    return render(request, "home.html", context)


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
