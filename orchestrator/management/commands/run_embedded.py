"""`make run`: migrate, create the demo, then run the gateway and a Celery worker under a
small supervisor that restarts a child that dies. Ctrl-C stops everything."""

from __future__ import annotations

import json
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

RESTART_DELAY = 0.5  # seconds between a child's death and its restart


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
    """Keeps each child running: a child that exits is started again after RESTART_DELAY."""

    def __init__(self, commands: dict[str, list[str]], *, log) -> None:
        self.commands = commands
        self.log = log
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def start(self) -> None:
        for name in self.commands:
            self._spawn(name)

    def _spawn(self, name: str) -> None:
        self.processes[name] = subprocess.Popen(self.commands[name])
        self.log(f"[supervisor] started {name} (pid {self.processes[name].pid})")

    def watch(self) -> None:
        while not self.stopping:
            for name, process in list(self.processes.items()):
                code = process.poll()
                if code is not None and not self.stopping:
                    self.log(f"[supervisor] {name} exited with {code}; restarting")
                    time.sleep(RESTART_DELAY)
                    self._spawn(name)
            time.sleep(0.1)
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    def stop(self) -> None:
        self.stopping = True
