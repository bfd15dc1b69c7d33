"""Server-Sent Events responses, for the MCP streams (``http_mcp``) and the dashboard's live
stream alike."""

from __future__ import annotations

from collections.abc import AsyncIterator

from django.http import StreamingHttpResponse


def event_stream(events: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """``events`` (already formatted) as a ``text/event-stream`` that nothing caches or holds."""
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not hold events back
    return response
