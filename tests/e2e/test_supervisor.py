"""`make run`'s supervisor: a child killed with SIGKILL is started again within 2 s, works
again, and leaves nothing of its process group behind; SIGTERM stops everything; a child that
keeps dying at once is restarted ever more slowly."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from orchestrator.management.commands import run_embedded
from tests.e2e.test_run_embedded import ROOT, free_port, healthy

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path("/proc/self/stat").exists(), reason="reads process groups in /proc"
    ),
]
RESTART_WITHIN = 2.0  # seconds, the promise


class Log:
    """A process's output lines, each with the time it arrived, read in the background."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append((time.monotonic(), line))

    def wait_for(self, pattern: str, *, timeout: float, after: int = 0) -> tuple[float, str]:
        """The arrival time and first group of the first line from ``after`` on that matches."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):
            for at, line in self.lines[after:]:
                if match := re.search(pattern, line):
                    return at, match.group(1)
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matched {pattern!r} within {timeout} s:\n{self.tail()}")

    def tail(self) -> str:
        return "".join(line for _, line in self.lines[-40:])


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if condition():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s\n{detail()}")


def live_processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every live (not zombie) process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # it exited meanwhile
            # "pid (comm) state ppid pgrp ...", and comm may hold spaces or parentheses
            state, ppid, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
            if state not in {"Z", "X"}:
                found.append((int(stat.parent.name), int(ppid), int(pgrp)))
    return found


def group_members(pgid: int) -> list[int]:
    return [pid for pid, _, group in live_processes() if group == pgid]


def children(parent: int) -> list[int]:
    return [pid for pid, ppid, _ in live_processes() if ppid == parent]


def alive(pid: int) -> bool:
    return any(found == pid for found, _, _ in live_processes())


@dataclass
class Embedded:
    process: subprocess.Popen[str]
    log: Log
    port: int
    env: dict[str, str]
    token: str = ""

    def pids(self, child: str = r"\w+") -> list[int]:
        """The pids the supervisor started ``child`` with, oldest first: each one's process
        group too."""
        return [
            int(match.group(1))
            for _, line in self.log.lines
            if (match := re.search(rf"started {child} \(pid (\d+)\)", line))
        ]

    def pid(self, child: str) -> int:
        """The pid of ``child`` that the supervisor started last."""
        pids = self.pids(child)
        assert pids, f"{child} was never started:\n{self.log.tail()}"
        return pids[-1]

    def kill_and_wait_for_restart(self, child: str) -> tuple[int, int]:
        """SIGKILL ``child``; its old pid, and the new one, logged within 2 s of the kill."""
        old = self.pid(child)
        assert os.getpgid(old) == old, f"{child} does not lead a process group of its own"
        mark = len(self.log.lines)
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        self.log.wait_for(rf"{child} exited with (-9); restarting", timeout=10, after=mark)
        started_at, new = self.log.wait_for(
            rf"started {child} \(pid (\d+)\)", timeout=10, after=mark
        )
        assert started_at - killed_at < RESTART_WITHIN, f"{started_at - killed_at:.2f} s"
        return old, int(new)


def call_the_time_tool(embedded: Embedded) -> dict[str, Any]:
    """An MCP call with the demo agent's token, through the mcp SDK; its structured result."""

    async def call() -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {embedded.token}"}
        url = f"http://127.0.0.1:{embedded.port}/mcp"
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert result.structured_content is not None, result
        return result.structured_content

    return asyncio.run(call())


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path_factory.mktemp("embedded")),
        "PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_embedded"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    log = Log(process.stdout)
    running = Embedded(process=process, log=log, port=port, env=env)
    try:
        running.token = log.wait_for(r"Agent token: (wa_\S+)", timeout=90)[1]
        log.wait_for(r"(Stop with Ctrl-C\.)", timeout=10)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        for pgid in running.pids():  # never leave anything behind, whatever failed
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_a_killed_gateway_is_restarted_within_2_s_and_serves_an_agent(embedded: Embedded):
    assert call_the_time_tool(embedded)["timezone"] == "UTC"
    # The upstream MCP server the call started: in a session of its own (the mcp SDK's), so
    # it is not killed with the gateway's group; it must end when its stdin closes.
    upstream = children(embedded.pid("gateway"))
    assert upstream, "the gateway started no upstream server"

    old, new = embedded.kill_and_wait_for_restart("gateway")

    assert new != old
    wait_until(lambda: not group_members(old), 5, "end of the old gateway's group")
    wait_until(lambda: not any(map(alive, upstream)), 10, "end of the old upstream server")
    wait_until(lambda: healthy(embedded.port), 30, "/healthz answer", embedded.log.tail)
    assert call_the_time_tool(embedded)["timezone"] == "UTC"


def test_a_killed_worker_is_restarted_within_2_s_without_orphans_and_runs_a_task(
    embedded: Embedded,
):
    old = embedded.pid("worker")
    # Its prefork pool (2) and beat, which outlive a SIGKILLed main process on their own.
    wait_until(lambda: len(group_members(old)) >= 4, 30, "pool of the worker", embedded.log.tail)

    old, new = embedded.kill_and_wait_for_restart("worker")

    assert new != old
    wait_until(lambda: not group_members(old), 5, "end of the old worker's group")
    assert group_members(new), "the new worker is not running"
    assert cmdline(new)[1:3] == ["-m", "celery"]
    assert "worker" in cmdline(new)
    ping = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); "
         "from orchestrator.celery import ping; print(ping.delay().get(timeout=30))"],
        cwd=ROOT, env={**embedded.env, "DJANGO_SETTINGS_MODULE": "orchestrator.settings"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ping.stdout.strip() == "pong", ping.stderr


def test_sigterm_stops_every_child_and_leaves_nothing_behind(embedded: Embedded):
    groups = embedded.pids()  # every child ever started leads a process group of its own
    assert len(groups) >= 2

    embedded.process.send_signal(signal.SIGTERM)

    assert embedded.process.wait(timeout=30) == 0
    left = {pgid: members for pgid in groups if (members := group_members(pgid))}
    assert not left, f"processes left behind, by group: {left}"


def test_a_child_that_keeps_dying_at_once_is_restarted_ever_more_slowly(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(run_embedded, "STABLE_AFTER", 1.0)
    lines: list[tuple[float, str]] = []
    supervisor = run_embedded.Supervisor(
        {
            "crasher": [sys.executable, "-c", "raise SystemExit(3)"],
            "steady": [sys.executable, "-c", "import time; time.sleep(1.2)"],  # > STABLE_AFTER
        },
        log=lambda line: lines.append((time.monotonic(), line)),
    )
    supervisor.start()
    watching = threading.Thread(target=supervisor.watch)
    watching.start()
    try:
        time.sleep(5)
    finally:
        supervisor.stop()
        watching.join(timeout=30)

    def restart_delays(child: str) -> list[float]:
        """From each logged death of ``child`` to its next start."""
        delays, died = [], None
        for at, line in lines:
            if f"{child} exited with" in line:
                died = at
            elif f"started {child} " in line and died is not None:
                delays.append(at - died)
                died = None
        return delays

    crasher = restart_delays("crasher")  # 0.5, 1, 2 s, rather than a restart every 0.5 s
    assert 2 <= len(crasher) <= 4, crasher
    assert all(later > 1.5 * earlier for earlier, later in itertools.pairwise(crasher)), crasher
    steady = restart_delays("steady")  # each run was long enough: each restart is quick again
    assert len(steady) >= 2, steady
    assert all(delay < run_embedded.RESTART_DELAY + 0.3 for delay in steady), steady
    assert not watching.is_alive()
