"""``make bench``: run every benchmark in bench/, one after the other, and write
bench/results/latest.md: the machine, the versions, the date, and each figure with its ratio.

Each benchmark is a script that measures its own baseline in the same run and prints its
figure last (``RESULT name: ratio (goal …: met|MISSED) | figures``, bench/harness.py
``report``). A missed goal is reported, not an error; a benchmark that crashes or runs past
its time limit fails the run.

    .venv/bin/python bench/run.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import selectors
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import RESULTS_ENV  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "latest.md"


@dataclass(frozen=True)
class Benchmark:
    name: str
    argv: tuple[str, ...]
    limit_seconds: int  # the run fails if it takes longer: make bench has 10 minutes in all

    @property
    def script(self) -> Path:
        return ROOT / "bench" / f"{self.name}.py"


BENCHMARKS = (
    Benchmark("latency", (), 60),
    Benchmark("throughput", (), 90),
    Benchmark("cpu_per_call", (), 90),
    Benchmark("connected_agents", (), 150),
    Benchmark("noisy_neighbour", (), 120),
    Benchmark("policy_propagation", (), 120),
    Benchmark("gc_pauses", (), 90),
    Benchmark("policy_decide", (), 60),
    Benchmark("guardrails", (), 60),
    Benchmark("audit_write", ("--seconds", "3", "--verify-records", "100000"), 150),
)

PACKAGES = (
    "Django",
    "channels",
    "daphne",
    "Twisted",
    "autobahn",
    "uvicorn",
    "websockets",
    "mcp",
    "celery",
    "channels-redis",
    "psycopg",
    "cryptography",
    "google-re2",
)


def tool_version(*command: str) -> str:
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        return "not installed"
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"


def machine() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    mem = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    initdb = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    packages = []
    for name in PACKAGES:
        try:
            packages.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            packages.append(f"{name} (not installed)")
    return [
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; commit `{commit or 'unknown'}`",
        f"- **Machine:** {os.cpu_count()} cores ({model.group(1) if model else 'unknown CPU'}), "
        f"{int(mem.group(1)) / 1024 / 1024:.1f} GiB RAM, {platform.platform()}",
        f"- **Python:** {platform.python_version()}; SQLite {sqlite3.sqlite_version}; "
        f"PostgreSQL: {tool_version(str(initdb[-1]), '--version') if initdb else 'not installed'}; "
        f"Redis: {tool_version('redis-server', '--version')}",
        f"- **Packages:** {', '.join(packages)}",
    ]


def run(benchmark: Benchmark, results_file: Path) -> tuple[str, float, int | None]:
    """Run one benchmark, echoing its output; (output, seconds, exit code or None on timeout)."""
    print(f"\n=== {benchmark.name} ===", flush=True)
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(benchmark.script), *benchmark.argv],
        cwd=ROOT,
        env={**os.environ, RESULTS_ENV: str(results_file), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so a timeout takes its servers down with it
    )
    assert process.stdout is not None
    lines = []
    deadline = started + benchmark.limit_seconds
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                line = process.stdout.readline()
                if not line:
                    break
                print(line, end="", flush=True)
                lines.append(line)
    code: int | None
    try:
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        code = None
        os.killpg(process.pid, 9)
        process.wait()
        lines.append(f"\n(stopped: over its limit of {benchmark.limit_seconds} s)\n")
    return "".join(lines), time.monotonic() - started, code


def write_results(
    header: list[str], rows: list[dict], outputs: list[tuple[str, str]], total: float
) -> None:
    table = [
        "| Benchmark | Ratio | Goal | Met | Figures | Time |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "**failed**"}[row["met"]]
        ratio = f"{row['ratio']:.3g}" if row["ratio"] is not None else "-"
        table.append(
            f"| {row['name']} | {ratio} | {row['goal']} | {met} | {row['figures']} "
            f"| {row['seconds']:.0f} s |"
        )
    body = [
        "# Benchmark results",
        "",
        "Written by `make bench` (bench/run.py); each ratio is to a baseline measured in the "
        "same run. Loopback only. How each figure is measured: the docstring of its script "
        "in bench/.",
        "",
        *header,
        f"- **make bench:** {total:.0f} s in all",
        "",
        *table,
        "",
        "## Output of each benchmark",
    ]
    for name, output in outputs:
        body += ["", f"### {name}", "", "```", output.rstrip(), "```"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(body) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--only", nargs="*", help="benchmark names (default: all)")
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    started = time.monotonic()
    header = machine()
    print("\n".join(header))
    rows, outputs, failed = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        for benchmark in chosen:
            results_file = Path(scratch) / f"{benchmark.name}.jsonl"
            output, seconds, code = run(benchmark, results_file)
            outputs.append((benchmark.name, output))
            reported = (
                [json.loads(line) for line in results_file.read_text().splitlines()]
                if (results_file.exists())
                else []
            )
            if code != 0 or not reported:
                failed.append(benchmark.name)
                why = "timed out" if code is None else f"exit code {code}, no RESULT line"
                rows.append(
                    {
                        "name": benchmark.name,
                        "ratio": None,
                        "goal": "",
                        "met": None,
                        "figures": f"failed: {why}",
                        "seconds": seconds,
                    }
                )
                continue
            rows += [{**r, "seconds": seconds} for r in reported]
    total = time.monotonic() - started
    write_results(header, rows, outputs, total)
    print(f"\n=== summary ({total:.0f} s; written to {RESULTS.relative_to(ROOT)}) ===")
    for row in rows:
        verdict = {True: "met", False: "MISSED", None: "FAILED"}[row["met"]]
        ratio = f"{row['ratio']:.3g}" if row["ratio"] is not None else "-"
        print(f"{row['name']:<20} {ratio:>8}  {verdict:<6} {row['goal']:<30} {row['figures']}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
