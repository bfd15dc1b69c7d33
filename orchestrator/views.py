from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect


def home(request: HttpRequest) -> HttpResponseRedirect:
    """The compliance dashboard is the landing page."""
    return redirect("dashboard:index")


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
