"""What both MCP transports check before a message is read: the bearer token and Origin."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The token of an ``Authorization: Bearer …`` header in ASGI scope headers, or ''."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


def origin_allowed(origin: str | None) -> bool:
    """Browsers send Origin; a page on another site must not drive an agent's connection.
    Requests without Origin come from programs, not pages, and are allowed."""
    if origin is None:
        return True
    return any(
        origin == allowed or origin.startswith(allowed + ":")
        for allowed in settings.MCP_ALLOWED_ORIGINS
    )


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
