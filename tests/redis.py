"""A throwaway ``redis-server`` for tests: a free loopback port, no persistence, and a port that
stays the same across ``restart`` (as a restarted production Redis would), so clients
configured with its URL find it again."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

TIMEOUT = 10.0  # seconds for start-up and shutdown


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A private Redis in ``directory`` (its log there too). Nothing is saved: a restart
    starts empty, as a Redis without persistence does."""

    def __init__(self, directory: Path, *, port: int = 0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.log = directory / "redis.log"
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        """Start on the port (a free one the first time) and wait until it answers PING."""
        if self.proc is not None:
            raise RuntimeError("redis-server is running already")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + TIMEOUT
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}")
            time.sleep(0.02)

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL with ``kill``), then wait until it is gone and its port closed."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)  # a frozen server acts on its SIGTERM
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self, *, down_seconds: float = 0.0, kill: bool = False) -> None:
        """Stop, stay down ``down_seconds``, start again on the same port."""
        self.stop(kill=kill)
        time.sleep(down_seconds)
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections (the kernel does), nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: answers again, with everything it had."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False
