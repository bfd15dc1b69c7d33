"""`make run`: migrate, create the demo, then run the gateway and a Celery worker under a
small supervisor that restarts a child that dies. Ctrl-C stops everything."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from orchestrator.management.commands.demo_setup import HELD_TOOL, credentials_path

# The supervisor, in seconds. A child that dies is started again RESTART_DELAY later; one that
# keeps dying within STABLE_AFTER of its start waits twice as long each time, up to
# RESTART_DELAY_MAX. On stop, children have STOP_GRACE to exit, more if the gateway may drain
# its calls in flight for longer (DRAIN_SECONDS), before what is left of them is killed.
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 5.0
STABLE_AFTER = 10.0
STOP_GRACE = 20.0


class Command(BaseCommand):
    help = "Set up and start everything on the embedded default (SQLite, filesystem broker)."

    def add_arguments(self, parser):
        parser.add_argument("--no-worker", action="store_true", help="skip the Celery worker")

    def handle(self, *args, no_worker, **options):
        Path(settings.DATA_DIR).mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        call_command("demo_setup", stdout=self.stdout)
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        children = {
            "gateway": [sys.executable, manage, "serve"],
        }
        if not no_worker:
            children["worker"] = [
                sys.executable, "-m", "celery", "-A", "orchestrator",
                "--quiet",  # no banner: the one a new user must read is ours
                "worker", "--loglevel", "WARNING", "--concurrency", "2", "-B",
                "--hostname", "embedded@%h",
            ]  # fmt: skip
        supervisor = Supervisor(children, log=self.stdout.write)
        signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
        signal.signal(signal.SIGINT, lambda *_: supervisor.stop())
        supervisor.start()
        if self._wait_ready():
            self._banner()
        supervisor.watch()

    def _wait_ready(self) -> bool:
        url = f"http://{settings.HOST}:{settings.PORT}/healthz"
        for _ in range(150):
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    return response.status == 200
            except OSError:
                time.sleep(0.1)
        self.stderr.write(f"the gateway did not answer {url} within 15 s")
        return False

    def _banner(self) -> None:
        creds = json.loads(credentials_path().read_text())
        base = f"http://{settings.HOST}:{settings.PORT}"
        ws = f"ws://{settings.HOST}:{settings.PORT}/mcp/ws"
        token = creds["agent_token"]
        held = json.dumps(
            {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
        )
        self.stdout.write(
            f"""
================ WorkingAgents Orchestrator is running ================
Dashboard:   {base}/dashboard/   (Django admin: {base}/admin/)
Logins:      reviewer / {creds["reviewer_password"]}   (reviews tenant demo)
             admin / {creds["admin_password"]}   (superuser: every tenant, and the admin)
Agent token: {token}
MCP:         {base}/mcp  (streamable HTTP)   {ws}  (WebSocket, subprotocol "mcp")

Try it (in another terminal, from this directory):
  .venv/bin/python examples/agent.py --url {base}/mcp --token {token}

A call that waits for a reviewer: run this, then approve or deny it on
{base}/dashboard/demo/approvals (logged in as reviewer):
  .venv/bin/python examples/agent.py --url {base}/mcp --token {token} \\
      --tool {HELD_TOOL} --arguments '{held}'

or in your own code:
  import asyncio, httpx2
  from mcp import Client
  from mcp.client.streamable_http import streamable_http_client
  async def main():
      auth = {{"Authorization": "Bearer {token}"}}
      # No read timeout: a call held for approval waits for its reviewer.
      async with httpx2.AsyncClient(headers=auth, timeout=httpx2.Timeout(30, read=None)) as http:
          async with Client(streamable_http_client("{base}/mcp", http_client=http)) as client:
              print([t.name for t in (await client.list_tools()).tools])
              print(await client.call_tool("time__get_current_time", {{"timezone": "UTC"}}))
  asyncio.run(main())
A second tenant and its reviewer (who sees nothing of demo):
  .venv/bin/python manage.py tenant_create other
  .venv/bin/python manage.py member_add oscar --tenant other
Audit trail: .venv/bin/python manage.py audit_tail --tenant demo --json
Stop with Ctrl-C.
=======================================================================
"""
        )
        self.stdout.flush()


class Supervisor:
    """Keeps each child running, each in a process group of its own: when one dies, what is
    left of its group (a killed Celery worker's pool and beat) is killed, and the child is
    started again after its delay (see RESTART_DELAY). stop() ends them all."""

    def __init__(self, commands: dict[str, list[str]], *, log) -> None:
        self.commands = commands
        self.log = log
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.started: dict[str, float] = {}
        self.delays = dict.fromkeys(commands, RESTART_DELAY)
        self.restart_at: dict[str, float] = {}  # children waiting out their delay
        self.stopping = False

    def start(self) -> None:
        for name in self.commands:
            self._spawn(name)

    def _spawn(self, name: str) -> None:
        # A session of its own: Ctrl-C reaches it only through stop(), and its group can be
        # killed whole.
        self.processes[name] = subprocess.Popen(self.commands[name], start_new_session=True)
        self.started[name] = time.monotonic()
        self.log(f"[supervisor] started {name} (pid {self.processes[name].pid})")

    def watch(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            for name, process in list(self.processes.items()):
                if name in self.restart_at:
                    if now >= self.restart_at[name]:
                        del self.restart_at[name]
                        self._spawn(name)
                elif (code := process.poll()) is not None:
                    self.log(f"[supervisor] {name} exited with {code}; restarting")
                    _kill_group(process.pid)
                    if now - self.started[name] >= STABLE_AFTER:
                        self.delays[name] = RESTART_DELAY
                    self.restart_at[name] = now + self.delays[name]
                    self.delays[name] = min(2 * self.delays[name], RESTART_DELAY_MAX)
            time.sleep(0.1)
        self._stop_children()

    def _stop_children(self) -> None:
        # SIGTERM to each child only, not its group: the child stops its own children (Celery's
        # warm shutdown lets its pool finish the tasks in hand); the rest is killed after.
        running = [process for process in self.processes.values() if process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + max(STOP_GRACE, settings.DRAIN_SECONDS + 5)
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for process in self.processes.values():
            _kill_group(process.pid)  # stragglers, and anything a child left behind
            process.wait()

    def stop(self) -> None:
        self.stopping = True


def _kill_group(pgid: int) -> None:
    # PermissionError: macOS answers so for a group of zombies.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
