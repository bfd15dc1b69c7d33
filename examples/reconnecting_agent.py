"""An agent that keeps working across gateway restarts: the reconnection contract, in code.

A gateway drains before it restarts (docs/operations.md, "Graceful drain"). What an agent
can conclude from what it sees:

- an answer (a result or an error) is final, except -32008: the gateway was draining and
  did not run the call. Call again, on a new connection;
- a WebSocket closed with 1012 answered every call it had begun first; a call that got no
  answer was not run (it arrived as the connection closed). Reconnect, to another gateway
  or to the same one once it is back, and send it again;
- -32009: the drain ran out of time while the upstream had the call: it may have run;
- any other loss of the connection (the gateway died: 1006, a reset) leaves the calls that
  were not answered in doubt: the upstream may or may not have run them. This client raises
  ``OutcomeUnknown`` for them and leaves the choice to its caller (a read can simply be
  retried; a payment must be checked first). The audit trail records them `interrupted`.

Any MCP client library can follow the same rules. Run it against `make run`:

    .venv/bin/python examples/reconnecting_agent.py --url ws://127.0.0.1:8000/mcp/ws \\
        --token wa_… --calls 100

and restart the gateway meanwhile (or several, behind nginx: docs/operations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

DRAINING = -32008  # not run: call again on a new connection
RESTARTING = 1012  # WebSocket close code "service restart"
PROTOCOL_VERSION = "2025-11-25"


class OutcomeUnknown(Exception):
    """The connection was lost with this call unanswered: it may or may not have run."""


class NotRun(Exception):
    """The gateway did not run the call (-32008, no answer before a 1012 close, or it was
    never sent): send it again."""


class _Connection:
    """One WebSocket and the calls waiting on it for their answer, by request id."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.waiting: dict[str | int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.ensure_future(self._read())

    async def request(self, request_id: str | int, method: str, params: dict[str, Any]) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        try:
            await self.ws.send(json.dumps(message))
        except ConnectionClosed:
            self.waiting.pop(request_id, None)
            if future.done():
                future.exception()  # the reader settled it already; nobody else will look
            raise NotRun("never sent: the connection had closed") from None
        try:
            response = await future  # or the reader settles it by the close code
        finally:
            self.waiting.pop(request_id, None)
        error = response.get("error")
        if error and error["code"] == DRAINING:
            raise NotRun(error["message"])
        return response

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                message = json.loads(frame)
                future = self.waiting.get(message.get("id"))
                if future is not None and not future.done():
                    future.set_result(message)
        # Closed: what is still waiting was not run (1012), or is in doubt (anything else).
        code = self.ws.close_code
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(
                    NotRun("the gateway restarted")
                    if code == RESTARTING
                    else OutcomeUnknown(f"connection lost (close code {code})")
                )

    @property
    def open(self) -> bool:
        return not self.reader.done()


class ReconnectingAgent:
    """Calls tools through one or more gateway URLs, reconnecting across restarts.

    ``call_tool`` returns the JSON-RPC response (``result`` or ``error``) of the one run of
    the call, sends it again only when the gateway said it was not run, and raises
    ``OutcomeUnknown`` when nobody can say. It gives up after ``give_up_seconds``."""

    def __init__(
        self,
        urls: list[str],
        token: str,
        *,
        give_up_seconds: float = 60.0,
        backoff: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self.urls = itertools.cycle(urls)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.give_up_seconds = give_up_seconds
        self.backoff = backoff
        self.ids = itertools.count(1)
        self.connection: _Connection | None = None
        self.connecting = asyncio.Lock()
        self.connects = 0

    @property
    def reconnects(self) -> int:
        """How many times it had to connect again."""
        return max(self.connects - 1, 0)

    async def __aenter__(self) -> ReconnectingAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.connection is not None:
            await self.connection.ws.close()

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, request_id: str | int | None = None
    ) -> dict[str, Any]:
        request_id = next(self.ids) if request_id is None else request_id
        params = {"name": name, "arguments": arguments}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_seconds
        while True:
            connection = await self._connected(deadline)
            try:
                return await connection.request(request_id, "tools/call", params)
            except NotRun:
                if loop.time() > deadline:
                    raise
                await self._lost(connection)

    async def _connected(self, deadline: float) -> _Connection:
        async with self.connecting:  # concurrent calls share one reconnection
            delay = self.backoff[0]
            while self.connection is None or not self.connection.open:
                url = next(self.urls)
                try:
                    self.connection = await self._connect(url)
                except (OSError, WebSocketException, TimeoutError) as exc:
                    if asyncio.get_running_loop().time() + delay > deadline:
                        raise ConnectionError(f"no gateway answered: {exc!r}") from exc
                    await asyncio.sleep(delay)  # every gateway down, or all restarting
                    delay = min(delay * 2, self.backoff[1])
            return self.connection

    async def _connect(self, url: str) -> _Connection:
        ws = await connect(
            url,
            subprotocols=[Subprotocol("mcp")],
            additional_headers=self.headers,
            open_timeout=5,
        )
        connection = _Connection(ws)
        hello = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "reconnecting-agent", "version": "1"},
        }
        try:
            answer = await connection.request(f"init-{next(self.ids)}", "initialize", hello)
            if "error" in answer:
                raise ConnectionError(f"initialize refused: {answer['error']['message']}")
            await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        except (NotRun, OutcomeUnknown) as exc:  # it began to restart as we arrived
            await ws.close()
            raise ConnectionError(str(exc)) from None
        self.connects += 1
        return connection

    async def _lost(self, connection: _Connection) -> None:
        """Leave a connection that is restarting (the next call opens another)."""
        async with self.connecting:
            if self.connection is connection:
                self.connection = None
        with contextlib.suppress(Exception):
            await connection.ws.close()


async def main(urls: list[str], token: str, tool: str, arguments: dict[str, Any], calls: int):
    done = doubtful = 0
    async with ReconnectingAgent(urls, token) as agent:
        for n in range(calls):
            try:
                response = await agent.call_tool(tool, arguments)
            except OutcomeUnknown as exc:
                doubtful += 1
                print(f"call {n}: outcome unknown ({exc})")
                continue
            done += 1
            if error := response.get("error"):
                print(f"call {n}: error {error['code']}: {error['message']}")
            await asyncio.sleep(0.1)
        print(f"{done} calls answered, {doubtful} in doubt, {agent.reconnects} reconnections")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", action="append", required=True, help="ws://…/mcp/ws (repeat)")
    parser.add_argument("--token", required=True)
    parser.add_argument("--tool", default="time__get_current_time")
    parser.add_argument("--arguments", default='{"timezone": "UTC"}', type=json.loads)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.token, args.tool, args.arguments, args.calls))
