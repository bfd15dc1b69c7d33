"""Durable audit records per second through the batching writer, and the verification rate.

    .venv/bin/python bench/audit_write.py [--seconds 5] [--records 200000] [--writers 200]
                    [--verify-records 200000] [--only sqlite|postgresql] [--float-free]

Each backend gets a fresh database: SQLite in a fresh DATA_DIR (WAL with
``synchronous=NORMAL``, as orchestrator/settings.py configures it: a commit survives a
process crash, not a power loss, since the WAL is fsynced at checkpoints only), and
PostgreSQL in a fresh throwaway cluster (tests/pg.py) with ``fsync`` and
``synchronous_commit`` at their defaults: every commit waits for the WAL flush. Both are
migrated with ``manage.py migrate``; Django reads its settings once per process, so each
measurement runs in a child process of this script (``--role``), and this one prints the table.

Measured, per database, in this order:

- **bare insert**: the baseline. A loop of single-row ``INSERT``s of an equivalent row (same
  columns, same kind of content: a fresh uuid, timestamps and JSON text per row) into the audit
  table through the raw DB-API connection Django opened (so the same PRAGMAs), in autocommit:
  one transaction per row, no hashing, no batching, no ORM. The barest honest way to make one
  record durable per call; the ratio printed last is ours ÷ this.
- **written**: ``--writers`` asyncio tasks in one process, each ``await writer.write(record)``
  in a loop through one ``AuditWriter(batch_max=AUDIT_BATCH_MAX)``: exactly the gateway's
  path, where a caller goes on only when its record is committed. Each task writes the
  intent and then the outcome record of one tool call at a time, built in the loop like the
  gateway's ``CallLog``: arguments of a few keys, two or three guardrail verdicts with a
  finding now and then, latency, result digest. One tool in five has a float argument (a
  timeout), which canonical JSON writes by its float path, and one in five a file name like
  ``module_7.py``, which verification's textual float test sends to a walk for floats;
  ``--float-free`` leaves both out, the best case. A run stops after ``--seconds`` or
  ``--records``, whichever comes first. Then the same with the calls of two tenants, and
  with the writers split over two processes (two gateways on one database, started
  together; their rate is all records ÷ the time from the first start to the last finish).
- **verified**: the chain of the first tenant is filled up to ``--verify-records`` with
  ``chain_append`` in transactions of 5,000 (the writer's own append, without 200 callers to
  wait for; its rate is shown too), then ``chain_verify(jobs=1)`` and ``chain_verify(jobs=2)``
  run over it and must report it OK. The rows were just written, so they are in the page cache.
  jobs=2 runs twice and the faster run counts: with one core taken by anything else, its two
  processes share the other and it is no faster than jobs=1.

The baseline is a raw cursor rather than ``AuditRecord.objects.create``: the ORM would add
its own cost to the baseline and flatter the ratio. Other work on the machine skews every
figure (the load average is printed at the start and the end).

Goals on the reference machine (2 cores): >= 5,000 records/s written durably by 200 writers
(one tenant, one process), >= 100,000 records/s verified (jobs=2, one per core). Prints the
ratio written ÷ bare insert last.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

WRITE_GOAL, VERIFY_GOAL = 5_000, 100_000
FILL_BATCH = 5_000
TENANTS = ("bench", "bench2")
FLOAT_FREE = False  # --float-free: no float, and no text that looks like one, in the arguments

# --- records -----------------------------------------------------------------------------------
TOOLS = (
    "fs__read_file",
    "git__git_commit",
    "fetch__fetch",
    "db__query",
    "time__get_current_time",
)


def arguments(tool: str, rng: random.Random, i: int) -> dict[str, Any]:
    if tool == "fs__read_file":  # "7.py": text that verify's float test takes for a number
        name = f"module_{i % 97}" + ("_" if FLOAT_FREE else "") + ".py"
        return {"path": f"/srv/repos/app/src/{name}", "encoding": "utf-8", "tail": 200}
    if tool == "git__git_commit":
        return {
            "repo_path": "/srv/repos/app",
            "message": f"fix: handle empty pages in the exporter (#{i % 4000})",
            "files": ["audit/export.py", "tests/audit/test_export.py"],
        }
    if tool == "fetch__fetch":
        return {"url": "https://docs.python.org/3/library/asyncio-task.html", "max_length": 5000}
    if tool == "db__query":  # the one float: canonical JSON's float path
        timeout = 3 if FLOAT_FREE else 2.5
        return {
            "sql": "select id, name from users where org = %s",
            "params": [i],
            "timeout": timeout,
        }
    return {"timezone": rng.choice(["Europe/Berlin", "America/New_York", "Asia/Tokyo"])}


def verdicts(rng: random.Random, outcome: bool) -> list[dict[str, Any]]:
    found = [
        {"check": "size", "stage": "input", "action": "block", "verdict": "pass", "guardrail": 1},
        {"check": "schema", "stage": "input", "action": "block", "verdict": "pass", "guardrail": 2},
        {
            "check": "secrets",
            "stage": "input",
            "action": "redact",
            "verdict": "pass",
            "guardrail": 4,
        },
    ]
    if outcome:
        injection = {
            "check": "injection",
            "stage": "output",
            "action": "redact",
            "verdict": "pass",
            "guardrail": 6,
        }
        if rng.random() < 0.05:
            injection |= {
                "verdict": "redact",
                "found": 1,
                "findings": [{"kind": "instruction_override", "path": "$.content[0].text"}],
            }
        found.append(injection)
    return found


def call_fields(rng: random.Random, tenant_id: int, i: int) -> dict[str, Any]:
    """The fields a call's records share, as ``CallLog`` gathers them."""
    tool = TOOLS[rng.randrange(len(TOOLS))]
    return {
        "call_id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "agent_id": 3,
        "agent_name": "claude-code@ci",
        "transport": "ws",
        "protocol_era": "handshake",
        "protocol_version": "2025-06-18",
        "request_id": str(i),
        "tool": tool,
        "arguments": arguments(tool, rng, i),
        "decision": "allow",
        "reason": f"rule 12 allows {tool.split('__')[0]}__*",
        "rule_id": 12,
        "shadow": {},
        "policy_version": 7,
    }


def intent_fields(call: dict[str, Any], rng: random.Random, now: Any) -> dict[str, Any]:
    return {
        **call,
        "kind": "intent",
        "guardrails": verdicts(rng, outcome=False),
        "started_at": now,
        "created_at": now,
    }


def outcome_fields(intent: dict[str, Any], rng: random.Random, now: Any) -> dict[str, Any]:
    found = verdicts(rng, outcome=True)
    return {
        **intent,
        "kind": "outcome",
        "guardrails": found,
        "flagged": any(v["verdict"] != "pass" for v in found),
        "outcome": "ok",
        "result_digest": hashlib.sha256(intent["call_id"].bytes).hexdigest(),
        "latency_us": rng.randrange(800, 40_000),
        "created_at": now,
    }


# --- child processes: one database each --------------------------------------------------------
def django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    import django

    django.setup()


def tenant_ids() -> list[int]:
    from governance.models import Tenant

    return [Tenant.objects.get(slug=slug).id for slug in TENANTS]


def bare_insert(seconds: float, limit: int) -> dict[str, Any]:
    """Single-row INSERTs, one transaction each, through the raw DB-API connection."""
    from django.db import connection
    from django.utils import timezone

    from audit.models import AuditRecord
    from governance.services.agents import tenant_create

    tenant = tenant_create(slug="baseline")
    connection.ensure_connection()
    raw = connection.connection
    sqlite = connection.vendor == "sqlite"
    if sqlite:
        assert raw.isolation_level is None  # autocommit: each INSERT is its own transaction
    else:
        assert raw.autocommit
    fields = [f for f in AuditRecord._meta.concrete_fields if f.column != "id"]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    marks = ", ".join(["?" if sqlite else "%s"] * len(fields))
    sql = f"INSERT INTO {AuditRecord._meta.db_table} ({columns}) VALUES ({marks})"  # noqa: S608
    json_columns = {f.attname for f in fields if f.get_internal_type() == "JSONField"}
    defaults = {"flagged": False, "outcome": "", "error": "", "result_digest": ""}
    defaults |= {"latency_us": None, "actor": "", "subject": "", "diff": {}}
    defaults |= {"prev_hash": "0" * 64, "hash": "f" * 64}

    def adapt(attr: str, value: Any) -> Any:
        if attr in json_columns:
            return json.dumps(value)
        if sqlite and attr == "call_id":
            return value.hex
        if sqlite and attr in ("started_at", "created_at"):
            return value.replace(tzinfo=None).isoformat(" ")  # what Django stores: naive UTC
        return value

    first = AuditRecord.objects.filter(tenant=tenant).count() + 1  # after tenant_create's records
    rng = random.Random(1)
    cursor = raw.cursor()
    done, intent = 0, None
    started = time.perf_counter()
    deadline = started + seconds
    while done < limit and time.perf_counter() < deadline:
        now = timezone.now()
        if intent is None:
            intent = intent_fields(call_fields(rng, tenant.id, done), rng, now)
            values = intent
        else:
            values, intent = outcome_fields(intent, rng, now), None
        row = {**defaults, **values, "seq": first + done}
        cursor.execute(sql, [adapt(f.attname, row[f.attname]) for f in fields])
        done += 1
    elapsed = time.perf_counter() - started
    cursor.close()
    assert AuditRecord.objects.filter(tenant=tenant).count() == first - 1 + done
    return {"rows": done, "seconds": elapsed, "rate": done / elapsed}


async def write(
    tenants: list[int], writers: int, seconds: float, limit: int, *, ready: Any = None
) -> dict[str, Any]:
    """``writers`` callers awaiting ``AuditWriter.write`` of a call's intent, then its outcome."""
    from django.conf import settings
    from django.utils import timezone

    from audit.models import AuditRecord
    from audit.writer import AuditWriter

    writer = AuditWriter(batch_max=settings.AUDIT_BATCH_MAX)
    # Warm up: the writer thread's connection, the signing key, the first batches.
    rng = random.Random(0)
    for _ in range(2):
        await asyncio.gather(
            *(
                writer.write(
                    AuditRecord(**intent_fields(call_fields(rng, t, 0), rng, timezone.now()))
                )
                for t in tenants * (writers // len(tenants))
            )
        )
    if ready is not None:
        await ready()
    batches = writer.batches_committed
    issued = done = 0
    latencies: list[float] = []
    clock = time.perf_counter
    wall, cpu, started = time.time(), time.process_time(), clock()
    deadline = started + seconds
    finished = started

    async def caller(n: int) -> None:
        nonlocal issued, done, finished
        rng = random.Random(n)
        tenant, call = tenants[n % len(tenants)], 0
        while True:
            fields = call_fields(rng, tenant, call)
            intent = None
            for _ in range(2):
                if issued >= limit or clock() >= deadline:
                    return
                issued += 1
                now = timezone.now()
                if intent is None:
                    values = intent = intent_fields(fields, rng, now)
                else:
                    values = outcome_fields(intent, rng, now)
                began = clock()
                await writer.write(AuditRecord(**values))
                finished = clock()
                latencies.append(finished - began)
                done += 1
            call += 1

    await asyncio.gather(*(caller(n) for n in range(writers)))
    elapsed = finished - started
    batches = writer.batches_committed - batches
    latencies.sort()
    return {
        "records": done,
        "seconds": elapsed,
        "rate": done / elapsed,
        "batch": done / batches,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "cpu": (time.process_time() - cpu) / elapsed,
        "wall": (wall, wall + elapsed),
    }


def role_measure(args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection

    from governance.services.agents import tenant_create

    for slug in TENANTS:
        tenant_create(slug=slug)
    one, two = tenant_ids()
    bare = bare_insert(args.seconds, args.records)
    connection.close()
    written = asyncio.run(write([one], args.writers, args.seconds, args.records))
    tenants2 = asyncio.run(write([one, two], args.writers, args.seconds, args.records))
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            journal = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[cursor.fetchone()[0]]
        durability = f"journal_mode={journal}, synchronous={synchronous}"
    else:
        with connection.cursor() as cursor:
            cursor.execute("SHOW fsync")
            fsync = cursor.fetchone()[0]
            cursor.execute("SHOW synchronous_commit")
            sync_commit = cursor.fetchone()[0]
            cursor.execute("SHOW wal_sync_method")
            method = cursor.fetchone()[0]
        durability = f"fsync={fsync}, synchronous_commit={sync_commit}, wal_sync_method={method}"
    return {"bare": bare, "written": written, "tenants2": tenants2, "durability": durability}


def role_write(args: argparse.Namespace) -> dict[str, Any]:
    """One of two gateway-like processes: set up, say ready, start on "go" from stdin."""

    async def ready() -> None:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    one, _ = tenant_ids()
    return asyncio.run(write([one], args.writers, args.seconds, args.records, ready=ready))


def role_verify(args: argparse.Namespace) -> dict[str, Any]:
    from django.db import transaction
    from django.utils import timezone

    from audit.chain import chain_append
    from audit.models import AuditRecord
    from audit.verify import chain_verify
    from governance.models import Tenant

    tenant = Tenant.objects.get(slug=TENANTS[0])
    have = AuditRecord.objects.filter(tenant=tenant).count()
    rng, added, call = random.Random(99), 0, 0
    started = time.perf_counter()
    while have + added < args.verify_records:
        batch = []
        for _ in range(min(FILL_BATCH, args.verify_records - have - added) // 2 + 1):
            intent = intent_fields(call_fields(rng, tenant.id, call), rng, timezone.now())
            outcome = outcome_fields(intent, rng, timezone.now())
            batch += [AuditRecord(**intent), AuditRecord(**outcome)]
            call += 1
        with transaction.atomic():
            chain_append(batch)
        added += len(batch)
    fill_seconds = time.perf_counter() - started
    result: dict[str, Any] = {"written": have, "added": added, "fill_seconds": fill_seconds}
    for jobs in (1, 2, 2):  # jobs=2 twice, the better kept: another process on a core halves it
        started = time.perf_counter()
        report = chain_verify(tenant=tenant, jobs=jobs)
        seconds = time.perf_counter() - started
        assert report.ok, f"chain_verify(jobs={jobs}): {report.broken}"
        assert report.records == have + added, (report.records, have + added)
        best = result.get(f"jobs{jobs}", {}).get("seconds", seconds)
        result[f"jobs{jobs}"] = {"records": report.records, "seconds": min(best, seconds)}
    return result


def child(args: argparse.Namespace) -> None:
    django_setup()
    run = {"measure": role_measure, "write": role_write, "verify": role_verify}[args.role]
    print(json.dumps(run(args)), flush=True)


# --- the parent: databases, children, the table ------------------------------------------------
def run_child(env: dict[str, str], args: argparse.Namespace, role: str, **extra: Any) -> Any:
    done = subprocess.run(
        child_argv(args, role, **extra), env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"{role} child failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def child_argv(args: argparse.Namespace, role: str, **extra: Any) -> list[str]:
    options = vars(args) | extra
    argv = [sys.executable, str(Path(__file__).resolve()), "--role", role]
    for name in ("seconds", "records", "writers", "verify_records"):
        argv += [f"--{name.replace('_', '-')}", str(options[name])]
    return argv + (["--float-free"] if args.float_free else [])


def two_processes(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """Two writer processes on one database, each with half the writers, started together."""
    half = {"writers": args.writers // 2, "records": args.records // 2}
    procs = [
        subprocess.Popen(
            child_argv(args, "write", **half),
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            sys.exit(f"write child failed:\n{line}{proc.communicate()[1]}")
    results = []
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            sys.exit(f"write child failed:\n{out}{err}")
        results.append(json.loads(out.splitlines()[-1]))
    first = min(r["wall"][0] for r in results)
    last = max(r["wall"][1] for r in results)
    records = sum(r["records"] for r in results)
    return {
        "records": records,
        "rate": records / (last - first),
        "batch": statistics.mean(r["batch"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
    }


def measure_database(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    manage = [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0", "--noinput"]
    subprocess.run(manage, env=env, cwd=ROOT, check=True)
    results = run_child(env, args, "measure")
    results["processes2"] = two_processes(env, args)
    results["verify"] = run_child(env, args, "verify")
    results["total_seconds"] = time.perf_counter() - started
    return results


@contextmanager
def sqlite_env() -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="bench-audit-sqlite-") as data:
        env = {**os.environ, "DATA_DIR": data, "LOG_LEVEL": "ERROR"}
        env.pop("DATABASE_URL", None)
        yield env


@contextmanager
def postgres_env() -> Iterator[dict[str, str]]:
    from tests.pg import PostgresCluster

    # Not a 0700 directory the postgres OS user cannot reach: PostgresCluster chowns this one.
    with (
        tempfile.TemporaryDirectory(prefix="bench-audit-pg-") as workdir,
        tempfile.TemporaryDirectory(prefix="bench-audit-data-") as data,
    ):
        cluster = PostgresCluster(Path(workdir))
        cluster.start()
        try:
            url = cluster.create_database("bench")
            yield {**os.environ, "DATA_DIR": data, "DATABASE_URL": url, "LOG_LEVEL": "ERROR"}
        finally:
            cluster.stop()


def versions() -> str:
    import sqlite3

    import django

    from tests.pg import pg_bin

    try:
        postgres = subprocess.run(
            [pg_bin("postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[2]
    except (FileNotFoundError, subprocess.CalledProcessError):
        postgres = "not installed"
    disk = subprocess.run(
        ["df", "--output=fstype", tempfile.gettempdir()], capture_output=True, text=True
    ).stdout.split()[-1]
    return (
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Django {django.__version__}, SQLite {sqlite3.sqlite_version}, PostgreSQL {postgres}; "
        f"databases on {disk} ({tempfile.gettempdir()})"
    )


def met(value: float, goal: float) -> str:
    return f"goal >= {goal:,}: {'met' if value >= goal else 'MISSED'}"


def line(label: str, rate: float, unit: str, detail: str) -> None:
    print(f"  {label:<50} {rate:>9,.0f} {unit:<17} ({detail})")


def report(name: str, note: str, r: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"{name}: {r['durability']} ({note}); {r['total_seconds']:.0f} s in all")
    bare = r["bare"]
    line(
        "bare single-row INSERT loop (raw cursor, autocommit)",
        bare["rate"],
        "rows/s",
        f"{bare['rows']:,} rows",
    )
    rows = (
        (f"written, {args.writers} writers, 1 tenant, 1 process", r["written"]),
        (f"written, {args.writers} writers, 2 tenants, 1 process", r["tenants2"]),
        (f"written, {args.writers} writers, 1 tenant, 2 processes", r["processes2"]),
    )
    for label, w in rows:
        detail = (
            f"{w['records']:,} records, mean batch {w['batch']:.0f}, "
            f"write p50 {w['p50_ms']:.1f} ms p99 {w['p99_ms']:.1f} ms"
        )
        if "cpu" in w:
            detail += f", writer process CPU {w['cpu']:.0%}"
        if w is r["written"]:
            detail += f", {met(w['rate'], WRITE_GOAL)}"
        line(label, w["rate"], "records/s durable", detail)
    v = r["verify"]
    line(
        f"chain_append, {FILL_BATCH:,} per transaction (verify's fill)",
        v["added"] / v["fill_seconds"],
        "records/s",
        f"{v['added']:,} records",
    )
    for jobs in (1, 2):
        j = v[f"jobs{jobs}"]
        rate = j["records"] / j["seconds"]
        detail = f"{j['records']:,} records, report OK"
        if jobs == 2:
            detail += f", the better of 2 runs, {met(rate, VERIFY_GOAL)}"
        line(f"verified, chain_verify(jobs={jobs})", rate, "records/s", detail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measured run")
    parser.add_argument("--records", type=int, default=200_000, help="most records per run")
    parser.add_argument("--writers", type=int, default=200, help="concurrent writers")
    parser.add_argument("--verify-records", type=int, default=200_000)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument(
        "--float-free",
        action="store_true",
        help="arguments without floats or float-like text: canonical JSON's fast path only",
    )
    parser.add_argument("--role", choices=["measure", "write", "verify"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    global FLOAT_FREE
    FLOAT_FREE = args.float_free
    if args.role:
        child(args)
        return

    started = time.perf_counter()
    print(versions(), flush=True)
    print(
        f"load average at start: {os.getloadavg()[0]:.2f} (other work on the machine skews "
        f"every figure); records: {'float-free' if FLOAT_FREE else 'the default mix'}",
        flush=True,
    )
    databases = [
        ("SQLite", sqlite_env, "durable against a process crash, not a power loss"),
        ("PostgreSQL", postgres_env, "defaults: every commit waits for the WAL flush"),
    ]
    ratios = []
    verify_rates: dict[str, float] = {}
    for name, environment, note in databases:
        if args.only and name.lower() != args.only:
            continue
        with environment() as env:
            results = measure_database(env, args)
        report(name, note, results, args)
        ratios.append((name, results["written"]["rate"], results["bare"]["rate"]))
        jobs2 = results["verify"]["jobs2"]
        verify_rates[name] = jobs2["records"] / jobs2["seconds"]
    print(
        f"all in {time.perf_counter() - started:.0f} s; "
        f"load average at the end: {os.getloadavg()[0]:.2f}"
    )
    if args.only:
        return
    (_, sqlite_ours, sqlite_bare), (_, pg_ours, pg_bare) = ratios
    written, verified = sqlite_ours, verify_rates["SQLite"]
    harness.report(
        "audit_write",
        ratio=sqlite_ours / sqlite_bare,
        goal=f"≥ {WRITE_GOAL:,} records/s durable, ≥ {VERIFY_GOAL:,} verified/s",
        met=written >= WRITE_GOAL and verified >= VERIFY_GOAL,
        figures=(
            f"SQLite: {written:,.0f} durable records/s ({args.writers} writers) ÷ bare inserts "
            f"{sqlite_bare:,.0f}/s, verified {verified:,.0f}/s; PostgreSQL: {pg_ours:,.0f} ÷ "
            f"{pg_bare:,.0f}/s = {pg_ours / pg_bare:.2f}, verified "
            f"{verify_rates['PostgreSQL']:,.0f}/s"
        ),
    )


if __name__ == "__main__":
    main()
