from django.urls import path

from orchestrator.consumers import AgentConsumer

websocket_urlpatterns = [path("mcp/ws", AgentConsumer.as_asgi())]
