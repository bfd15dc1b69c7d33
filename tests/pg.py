"""A throwaway PostgreSQL cluster for tests and benchmarks (Debian's ``postgresql`` package)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql

TIMEOUT = 30  # seconds for every wait: initdb, start-up, shutdown


def pg_bin(name: str) -> str:
    """Path of a server binary (initdb, pg_ctl, postgres); Debian keeps them off PATH."""
    found = Path("/usr/lib/postgresql").glob(f"*/bin/{name}")
    versioned = [p for p in found if p.parts[-3].isdigit()]
    if versioned:
        return str(max(versioned, key=lambda p: int(p.parts[-3])))
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"PostgreSQL binary {name!r} not found")
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    """A private cluster in ``directory`` on a free loopback port, with trust auth.

    Durability settings stay at their defaults (fsync, synchronous_commit): benchmarks
    measure them. As root the server runs as the ``postgres`` OS user, since initdb and
    postgres refuse to run as root; that user must be able to reach ``directory``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.sockets = directory / "sockets"
        self.log = directory / "server.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        # setuid in the child keeps proc.pid the postmaster itself, so signals reach it.
        self._user: dict[str, object] = {}
        if os.geteuid() == 0:
            self._user = {"user": "postgres", "group": "postgres", "extra_groups": []}

    def start(self) -> None:
        self.sockets.mkdir(parents=True, exist_ok=True)
        if self._user:
            for path in (self.directory, self.sockets):
                shutil.chown(path, "postgres", "postgres")
        if not self.data.exists():
            self._initdb()
        self.port = _free_port()
        argv = [pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port)]
        for setting in (
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={self.sockets}",
            "max_connections=300",  # benchmarks open 200 connections
        ):
            argv += ["-c", setting]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, **self._user
            )
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                self._connect().close()
                return
            except psycopg.OperationalError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start on port {self.port}{self._tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: abort sessions, checkpoint), then SIGKILL on timeout."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str, *, template: str = "") -> str:
        """An empty database, or a copy of the database ``template`` (fast: file copies)."""
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self._connect() as conn:
            conn.execute(query)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        # FORCE terminates sessions a test left open, which would otherwise block the drop.
        query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with self._connect() as conn:
            conn.execute(query)

    def _initdb(self) -> None:
        argv = [pg_bin("initdb"), "-D", str(self.data), "-U", "postgres"]
        argv += ["-E", "UTF8", "--locale=C.UTF-8"]  # not the machine's locale: may be SQL_ASCII
        try:
            subprocess.run(
                argv, capture_output=True, text=True, check=True, timeout=TIMEOUT, **self._user
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed:\n{exc.stdout}{exc.stderr}") from exc
        # Trust only local sockets and loopback TCP; the server listens on nothing else.
        hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        hba_file = self.data / "pg_hba.conf"
        hba_file.write_text(hba)
        if self._user:
            shutil.chown(hba_file, "postgres", "postgres")

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        )

    def _tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(text.splitlines()[-lines:])
