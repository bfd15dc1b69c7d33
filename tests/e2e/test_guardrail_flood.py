"""One agent floods a live gateway with guardrail-heavy and bad input; five other agents,
making paced calls meanwhile, notice nothing: every one of their calls succeeds, and their
median latency stays within a bound of their median without the flood.

The gateway here is its own process (it takes messages up to the default 1 MiB, where the
shared one takes 64 KiB). The flood, on three streams at once, bounded in count and time:

- WebSocket, one message after another: a ~900 KB string (the size guardrail refuses it),
  ~900 KB of text in four strings with a deny pattern at the very end (every check before
  ``deny_patterns`` reads it all), a 2 MB frame (above the message limit), 10,000-deep
  nesting (the parser gives up), 200-deep nesting (parsed, then refused by the size
  guardrail's max_depth 64), an out-of-schema argument;
- WebSocket, bursts of 80 slow calls: 64 run, 16 are refused at the in-flight cap;
- HTTP: bodies that are not UTF-8.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx2
import pytest
from websockets.asyncio.client import connect

from tests.e2e.conftest import ROOT, TESTKIT, Gateway, mcp_client, start_server, stop_server

pytestmark = pytest.mark.e2e

MAX_MESSAGE = 1024 * 1024  # MCP_MAX_MESSAGE_BYTES, the default
OTHERS = [f"other{i}" for i in range(1, 6)]
PACE = 0.05  # seconds between the starts of one other agent's calls
BASELINE_SECONDS = 2.0
FLOOD_SECONDS = 6.0
FLOOD_MAX_MESSAGES = 3000  # per stream
BURST, IN_FLIGHT_CAP = 80, 64
BURST_SLEEP = 2.0  # seconds each burst call takes upstream: all 80 arrive while 64 run
CHEAP = ("time__get_current_time", {"timezone": "UTC"})

SETUP = """
import io
import sys
from django.core.management import call_command
from governance.models import Guardrail
from governance.services.agents import agent_create, tenant_create, token_issue
from governance.services.guardrails import guardrail_save
from governance.services.policy import rule_create

tenant = tenant_create(slug="flood")
for name in ["hog", *sys.argv[1:]]:
    print(name, token_issue(agent=agent_create(tenant=tenant, name=name)).token)
for server, command in [("time", "-m mcp_server_time"), ("testkit", {testkit!r})]:
    argv = f"{{sys.executable}} {{command}}"
    call_command("toolserver_add", server, tenant="flood", cmd=argv, stdout=io.StringIO())
rule_create(tenant=tenant, effect="allow", resource="*")
deny = Guardrail.objects.get(tenant=tenant, name="deny_patterns", agent=None, tool="")
deny.config = {{"patterns": [r"(?i)drop\\s+table"]}}
guardrail_save(guardrail=deny)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway of its own: tenant flood, agent hog (the flooder) and five others, the time
    and testkit upstreams, every tool allowed, a deny pattern."""
    data_dir = tmp_path_factory.mktemp("flood")
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "MCP_MAX_MESSAGE_BYTES": str(MAX_MESSAGE),
        "MCP_CALL_TIMEOUT_SECONDS": "10",
        "GOVERNANCE_POLL_SECONDS": "0.25",
        "PYTHONPATH": str(ROOT),
    }
    gw = Gateway(data_dir=data_dir, env=env)
    gw.manage("migrate", "-v0")
    script = SETUP.format(testkit=str(TESTKIT))
    done = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup()\n{script}", *OTHERS],
        env={**env, "DJANGO_SETTINGS_MODULE": "orchestrator.settings"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    gw.tokens = dict(line.split() for line in done.stdout.splitlines())
    start_server(gw)
    yield gw
    stop_server(gw)


# --- the flood --------------------------------------------------------------------------------
def call(request_id: str, arguments: str, name: str = "testkit__echo") -> str:
    """A tools/call frame whose arguments are given as JSON text (so it can be malformed)."""
    return (
        f'{{"jsonrpc":"2.0","id":"{request_id}","method":"tools/call",'
        f'"params":{{"name":"{name}","arguments":{arguments}}}}}'
    )


def prose(size: int) -> str:
    """Plain English words, ``size`` characters of them."""
    sentence = "the quick brown fox jumps over the lazy dog while the build keeps running "
    return (sentence * (size // len(sentence) + 1))[:size]


def blocked_by(check: str, wording: str) -> Callable[[dict[str, Any]], bool]:
    def documented(reply: dict[str, Any]) -> bool:
        error = reply.get("error") or {}
        return (
            error.get("code") == -32006
            and error.get("data", {}).get("check") == check
            and wording in error.get("message", "")
        )

    return documented


def rpc_error(code: int, wording: str) -> Callable[[dict[str, Any]], bool]:
    def documented(reply: dict[str, Any]) -> bool:
        error = reply.get("error") or {}
        return error.get("code") == code and wording in error.get("message", "")

    return documented


def bad_frames() -> list[tuple[str, str, Callable[[dict[str, Any]], bool]]]:
    """(kind, frame, what the documented answer looks like), each built once."""
    quarter = json.dumps(prose(225_000))
    split = json.dumps(prose(225_000) + " and now DROP TABLE users")
    deep = "[" * 10_000 + "]" * 10_000
    nested = "[" * 200 + "]" * 200
    frames = [
        (
            "900 KB string",
            call("big", json.dumps({"text": prose(900_000)})),
            blocked_by("size", "exceeds 262144"),
        ),
        (
            "900 KB in four strings",
            call("split", f'{{"text":"x","a":{quarter},"b":{quarter},"c":{quarter},"d":{split}}}'),
            blocked_by("deny_patterns", "found deny_pattern in the input"),
        ),
        (
            "2 MB frame",
            call("huge", json.dumps({"text": prose(2_000_000)})),
            rpc_error(-32600, f"exceeds the limit of {MAX_MESSAGE}"),
        ),
        (
            "10,000-deep nesting",
            call("deep", f'{{"text":"x","n":{deep}}}'),
            rpc_error(-32700, "parse error: JSON nested too deeply"),
        ),
        (
            "200-deep nesting",
            call("nested", f'{{"text":"x","n":{nested}}}'),
            blocked_by("size", "nesting depth 201 exceeds 64"),
        ),
        (
            "out of schema",
            call("schema", '{"text": 5}'),
            blocked_by("schema", "$.text: expected string, got integer"),
        ),
    ]
    fitting = [kind for kind, frame, _ in frames if len(frame.encode()) <= MAX_MESSAGE]
    assert len(fitting) == len(frames) - 1  # all but the 2 MB frame fit the message limit
    return frames


class Tally:
    """Flood messages sent and answered as documented, by kind."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.documented: Counter[str] = Counter()
        self.surprises: list[tuple[str, Any]] = []

    def answered(self, kind: str, documented: bool, reply: Any) -> None:
        self.sent[kind] += 1
        if documented:
            self.documented[kind] += 1
        elif len(self.surprises) < 5:
            self.surprises.append((kind, str(reply)[:300]))


def handshake() -> str:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": "init",
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25"},
        }
    )


async def ws(gateway: Gateway, token: str):
    return connect(
        gateway.ws_url,
        subprotocols=["mcp"],
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=None,
    )


async def flood_frames(gateway: Gateway, tally: Tally, deadline: float) -> None:
    frames = bad_frames()
    async with await ws(gateway, gateway.tokens["hog"]) as conn:
        await conn.send(handshake())
        assert "result" in json.loads(await conn.recv())
        for kind, frame, documented in itertools.islice(
            itertools.cycle(frames), FLOOD_MAX_MESSAGES
        ):
            if time.monotonic() > deadline:
                return
            await conn.send(frame)
            reply = json.loads(await asyncio.wait_for(conn.recv(), 30))
            tally.answered(kind, documented(reply), reply)


async def flood_bursts(gateway: Gateway, tally: Tally, deadline: float) -> None:
    sleep = json.dumps({"seconds": BURST_SLEEP})
    async with await ws(gateway, gateway.tokens["hog"]) as conn:
        await conn.send(handshake())
        assert "result" in json.loads(await conn.recv())
        for round_ in range(FLOOD_MAX_MESSAGES // BURST):
            if time.monotonic() > deadline:
                return
            for i in range(BURST):
                await conn.send(call(f"r{round_}-{i}", sleep, name="testkit__sleep"))
            replies = [json.loads(await asyncio.wait_for(conn.recv(), 30)) for _ in range(BURST)]
            ran = [r for r in replies if "result" in r]
            capped = [r for r in replies if "error" in r]
            for reply in ran:
                slept = reply["result"]["content"][0]["text"] == f"slept {BURST_SLEEP}"
                tally.answered("slow call within the cap", slept, reply)
            for reply in capped:
                tally.answered(
                    "slow call beyond the cap",
                    reply["error"]["code"] == -32007
                    and "too many calls in flight" in reply["error"]["message"]
                    and reply["error"]["data"]["retryAfterSeconds"] == 1,
                    reply,
                )
            assert (len(ran), len(capped)) == (IN_FLIGHT_CAP, BURST - IN_FLIGHT_CAP)


async def flood_http(gateway: Gateway, tally: Tally, deadline: float) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\xff\xfe caf\xe9"}}'
    headers = {
        "Authorization": f"Bearer {gateway.tokens['hog']}",
        "Content-Type": "application/json",
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        for _ in range(FLOOD_MAX_MESSAGES):
            if time.monotonic() > deadline:
                return
            answer = await http.post(gateway.http_url, content=body, headers=headers)
            documented = answer.status_code == 400 and answer.json()["error"] == {
                "code": -32700,
                "message": "parse error: message is not valid UTF-8",
            }
            tally.answered("invalid UTF-8 over HTTP", documented, answer.text)


# --- the others -------------------------------------------------------------------------------
async def paced_calls(gateway: Gateway, agent: str, stop: asyncio.Event) -> list[float]:
    """The agent's cheap calls, one every PACE seconds until ``stop``: their latencies."""
    latencies = []
    async with mcp_client(gateway, gateway.tokens[agent], transport="ws") as client:
        await client.call_tool(*CHEAP)  # connected and warm
        while not stop.is_set() and len(latencies) < 1000:
            start = time.perf_counter()
            result = await client.call_tool(*CHEAP)
            latencies.append(time.perf_counter() - start)
            assert not result.is_error, result
            assert '"timezone": "UTC"' in result.content[0].text
            await asyncio.sleep(max(0.0, PACE - (time.perf_counter() - start)))
    return latencies


async def others_while(gateway: Gateway, work: Callable[[], Any]) -> list[list[float]]:
    stop = asyncio.Event()
    others = [asyncio.ensure_future(paced_calls(gateway, a, stop)) for a in OTHERS]
    try:
        await work()
    finally:
        stop.set()
    return await asyncio.gather(*others)


def p50_ms(latencies: Iterable[float]) -> float:
    return statistics.median(latencies) * 1000


def last_audit_id(gateway: Gateway) -> int:
    return gateway.query("SELECT coalesce(max(id), 0) AS id FROM audit_auditrecord")[0]["id"]


def gateway_side_ms(gateway: Gateway, after: int, until: int) -> list[float]:
    """The others' call latencies as the gateway measured them (audit ``latency_us``, from the
    call's start to its outcome being durable), between two audit row ids."""
    rows = gateway.query(
        "SELECT latency_us FROM audit_auditrecord WHERE kind = 'outcome' AND agent_name "
        "LIKE 'other%' AND id > ? AND id <= ?",
        (after, until),
    )
    return [row["latency_us"] / 1e6 for row in rows]


async def test_one_agent_flooding_bad_input_does_not_slow_the_others(site: Gateway):
    first = last_audit_id(site)
    baseline = list(
        itertools.chain(*await others_while(site, lambda: asyncio.sleep(BASELINE_SECONDS)))
    )
    middle = last_audit_id(site)

    tally = Tally()

    async def flood() -> None:
        deadline = time.monotonic() + FLOOD_SECONDS
        async with asyncio.timeout(FLOOD_SECONDS + 30):
            await asyncio.gather(
                flood_frames(site, tally, deadline),
                flood_bursts(site, tally, deadline),
                flood_http(site, tally, deadline),
            )

    started = time.monotonic()
    during_by_agent = await others_while(site, flood)
    flood_seconds = time.monotonic() - started
    during = list(itertools.chain(*during_by_agent))

    before, after = p50_ms(baseline), p50_ms(during)
    inside_before = p50_ms(gateway_side_ms(site, first, middle))
    inside_after = p50_ms(gateway_side_ms(site, middle, last_audit_id(site)))
    print(
        f"\nflood: {sum(tally.sent.values())} messages in {flood_seconds:.1f} s: "
        f"{dict(tally.sent)}"
        f"\nothers, p50 without / during the flood: {before:.1f} / {after:.1f} ms "
        f"({len(baseline)} / {len(during)} calls; bound {3 * before + 20:.1f} ms); "
        f"p90 {statistics.quantiles(baseline, n=10)[-1] * 1000:.1f} / "
        f"{statistics.quantiles(during, n=10)[-1] * 1000:.1f} ms; "
        f"inside the gateway (audit latency_us) p50 {inside_before:.1f} / {inside_after:.1f} ms"
    )
    # (1) every flood message got its documented answer, and every kind was sent
    assert tally.surprises == []
    assert tally.documented == tally.sent
    kinds = {kind for kind, _, _ in bad_frames()}
    kinds |= {"slow call within the cap", "slow call beyond the cap", "invalid UTF-8 over HTTP"}
    assert set(tally.sent) == kinds
    # (2) every other agent's call succeeded (paced_calls asserts each), and none was starved
    assert all(len(x) >= FLOOD_SECONDS / PACE / 4 for x in during_by_agent), [
        len(x) for x in during_by_agent
    ]
    # (3) their median latency stayed within a generous bound of the one without the flood
    assert after <= 3 * before + 20, f"p50 {after:.1f} ms during the flood, {before:.1f} before"
