from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from orchestrator.gateway import gateway_shutdown


@pytest.fixture
async def fresh_gateway() -> AsyncIterator[None]:
    """Each async test's event loop gets its own gateway, closed with the test."""
    yield
    await gateway_shutdown()
