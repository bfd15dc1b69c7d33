"""`make run`'s command on an empty data directory: it sets everything up, prints what a new
user needs, serves a real agent, answers Celery tasks, and restarts a child that dies."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx2
import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Output:
    """Collects a process's output lines in the background, to wait for patterns."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        threading.Thread(target=lambda: self.lines.extend(process.stdout), daemon=True).start()

    def wait_for(self, pattern: str, timeout: float = 60, after: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if match := re.search(pattern, line):
                    return match
            time.sleep(0.1)
        raise AssertionError(f"no line matched {pattern!r}:\n{''.join(self.lines[-40:])}")


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def test_run_embedded_comes_up_serves_an_agent_and_heals(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path), "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_embedded"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = Output(process)
    try:
        token = out.wait_for(r"Agent token: (wa_\S+)").group(1)
        out.wait_for(rf"Dashboard: +http://127.0.0.1:{port}/")
        reviewer_password = out.wait_for(r"Logins: +reviewer / (\S+)").group(1)
        out.wait_for(r"admin / \S+ +\(superuser")

        agent = subprocess.run(
            [
                sys.executable,
                "examples/agent.py",
                "--url",
                f"http://127.0.0.1:{port}/mcp",
                "--token",
                token,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert agent.returncode == 0, agent.stderr
        assert "time__get_current_time" in agent.stdout
        assert "'timezone': 'UTC'" in agent.stdout

        # The printed command for a call held for approval, approved by the printed reviewer.
        held = out.wait_for(r"(examples/agent\.py .* \\)$").group(1)
        held_args = out.wait_for(r"--tool (\S+) --arguments '(.+)'$")
        assert f"--token {token}" in held
        waiting = subprocess.Popen(
            [sys.executable, "examples/agent.py", "--url", f"http://127.0.0.1:{port}/mcp",
             "--token", token, "--tool", held_args.group(1), "--arguments", held_args.group(2)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        api = f"http://127.0.0.1:{port}/api/v1/tenants/demo/approvals"
        auth = ("reviewer", reviewer_password)
        deadline = time.monotonic() + 30
        while not (
            queue := httpx2.get(api, params={"status": "pending"}, auth=auth).json()["results"]
        ):
            assert time.monotonic() < deadline, "no request arrived in the queue"
            assert waiting.poll() is None, waiting.stdout.read() if waiting.stdout else ""
            time.sleep(0.2)
        decided = httpx2.post(
            f"{api}/{queue[0]['id']}/decision", json={"decision": "approve"}, auth=auth
        )
        assert decided.status_code == 200, decided.text
        told, _ = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, told
        assert "waiting for a reviewer to approve" in told
        assert "'timezone': 'Asia/Tokyo'" in told

        ping = subprocess.run(
            [
                sys.executable,
                "-c",
                "import django; django.setup(); from orchestrator.celery import ping; "
                "print(ping.delay().get(timeout=60))",
            ],
            cwd=ROOT,
            env={**env, "DJANGO_SETTINGS_MODULE": "orchestrator.settings"},
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert ping.stdout.strip() == "pong", ping.stderr

        gateway_pid = int(out.wait_for(r"started gateway \(pid (\d+)\)").group(1))
        mark = len(out.lines)
        os.kill(gateway_pid, signal.SIGKILL)
        out.wait_for(r"gateway exited with -9; restarting", timeout=5, after=mark)
        new_pid = int(
            out.wait_for(r"started gateway \(pid (\d+)\)", timeout=5, after=mark).group(1)
        )
        assert new_pid != gateway_pid
        deadline = time.monotonic() + 20
        while not healthy(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert healthy(port)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
