"""Inline guardrail time per call with the default checks, on clean, realistic payloads.

The pipeline is what a new tenant gets (``DEFAULT_GUARDRAILS`` in
governance/services/guardrails.py, without the slow check, which is off): size on both
stages, schema on the input, deny_patterns (no patterns) on both, secrets on both (redact),
pii and injection on the output (redact). One call is ``Pipeline.inspect`` of a ~4 KB
argument object against the tool's input schema, then of a ~16 KB ``CallToolResult`` (git
log lines in mcp-server-git's format, prose, JSON of an issue tracker, a file listing).
Nothing in either payload is found, so every check scans everything: the common case. The
baseline is ``json.loads`` of the same two payloads, in the same run: the least any gateway
does with them.

    .venv/bin/python bench/guardrails.py [--calls 5000]

Goal on the reference machine (2 cores): p50 <= 200 us per call (input and output).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import report
from governance.engine.guardrails import schema as schema_module
from governance.engine.guardrails.base import Action, Context, Outcome, Payload, Stage
from governance.engine.guardrails.pipeline import GuardrailSpec, TenantGuardrails

TOOL = "git__git_commit"
AGENT = 1
# DEFAULT_GUARDRAILS (governance/services/guardrails.py) as engine specs; that module needs
# Django, this script does not. The disabled slow check is left out, as effective() would.
DEFAULTS = (
    GuardrailSpec(1, "size", stage="both", action=Action.BLOCK),
    GuardrailSpec(2, "schema", stage="input", action=Action.BLOCK),
    GuardrailSpec(3, "deny_patterns", stage="both", action=Action.BLOCK, config={"patterns": []}),
    GuardrailSpec(4, "secrets", stage="both", action=Action.REDACT),
    GuardrailSpec(5, "pii", stage="output", action=Action.REDACT),
    GuardrailSpec(6, "injection", stage="output", action=Action.REDACT),
)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "repo_path": {"type": "string", "description": "Path to the repository"},
        "message": {"type": "string", "maxLength": 20000},
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "content": {"type": "string"},
                    "mode": {"type": "string", "enum": ["100644", "100755"]},
                },
                "required": ["path", "content"],
                "additionalProperties": False,
            },
        },
        "author": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "login": {"type": "string"}},
        },
        "amend": {"type": "boolean"},
        "sign": {"type": "boolean"},
        "max_count": {"type": "integer", "minimum": 1, "maximum": 1000},
        "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
    },
    "required": ["repo_path", "message"],
    "additionalProperties": False,
}
VOCABULARY = (
    "the pipeline gateway guardrail check agent tool call result schema config tenant",
    "policy rule approval upstream server session token cache value string payload order",
    "update refactor tests docs fix handle error timeout retry limit window record audit",
    "chain digest export module function class method field index query filter request",
    "response stream event handler worker queue task migration model view template",
)
WORDS = " ".join(VOCABULARY).split()
NAMES = ["Ana Lima", "Bo Chen", "Chidi Okafor", "Dana Novak", "Eli Haddad", "Femi Ade"]


def sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def arguments(rng: random.Random) -> dict[str, Any]:
    """A commit of three small files, ~4 KB as JSON."""
    files = []
    for i in range(3):
        body = "\n".join(
            f"def {rng.choice(WORDS)}_{rng.choice(WORDS)}_{j}(value, limit={rng.randrange(100)}):"
            f"\n    return value[:limit]  # {sentence(rng, 6)}"
            for j in range(9)
        )
        path = f"src/{rng.choice(WORDS)}/{rng.choice(WORDS)}_{i}.py"
        files.append({"path": path, "content": body, "mode": "100644"})
    message = sentence(rng, 8) + "\n\n" + " ".join(sentence(rng, 12) for _ in range(6))
    return {
        "repo_path": "/srv/repos/gateway",
        "message": message,
        "files": files,
        "author": {"name": rng.choice(NAMES), "login": "ana-lima"},
        "amend": False,
        "sign": True,
        "max_count": 10,
        "labels": ["guardrails", "performance", "v2.4.1"],
    }


def result(rng: random.Random) -> dict[str, Any]:
    """A CallToolResult of ~16 KB of text: git log, prose, JSON and a file listing."""
    parts = []
    for _ in range(18):  # mcp-server-git's git_log format
        parts.append(
            f"Commit: '{rng.getrandbits(160):040x}'\n"
            f'Author: <git.Actor "{rng.choice(NAMES)}">\n'
            f"Date: 2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d} "
            f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}+00:00\n"
            f"Message: '{sentence(rng, 9)}\\n'\n"
        )
    parts.append("\n".join(" ".join(sentence(rng, 14) for _ in range(4)) for _ in range(8)))
    issues = [
        {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "number": 1000 + n,
            "title": sentence(rng, 7),
            "state": rng.choice(["open", "closed"]),
            "created_at": f"2026-11-{rng.randrange(1, 29):02d}T10:15:30+00:00",
            "updated_at": 1764000000 + rng.randrange(10**6),
            "labels": rng.sample(["bug", "perf", "docs", "ui", "api"], 2),
            "url": f"https://git.example.org/acme/gateway/issues/{1000 + n}",
            "version": f"{rng.randrange(5)}.{rng.randrange(20)}.{rng.randrange(30)}",
        }
        for n in range(16)
    ]
    parts.append(json.dumps(issues, indent=1))
    parts.append(
        "\n".join(
            f"-rw-r--r-- 1 app app {rng.randrange(100, 90000):>6} Nov 24 10:15 "
            f"/srv/repos/gateway/src/{rng.choice(WORDS)}/{rng.choice(WORDS)}_{n}.py"
            for n in range(30)
        )
    )
    text = "\n\n".join(parts)
    return {"content": [{"type": "text", "text": text}], "isError": False}


def measure(call: Callable[[], Any], calls: int) -> list[float]:
    """Microseconds per call, one sample each, after a warm-up."""
    clock = time.perf_counter_ns
    for _ in range(min(500, calls)):
        call()
    samples = []
    for _ in range(calls):
        start = clock()
        call()
        samples.append((clock() - start) / 1000)
    return sorted(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    rng = random.Random(7)
    arguments_value, result_value = arguments(rng), result(rng)
    arguments_json, result_json = json.dumps(arguments_value), json.dumps(result_value)
    pipeline = TenantGuardrails(DEFAULTS).for_call(AGENT, TOOL)
    before = Context(Stage.INPUT, TOOL, SCHEMA)
    after = Context(Stage.OUTPUT, TOOL)

    stages = ((Stage.INPUT, arguments_value, before), (Stage.OUTPUT, result_value, after))
    for stage, value, context in stages:
        inspection = pipeline.inspect(stage, value, context)
        found = [v.as_record() for v in inspection.verdicts if v.outcome is not Outcome.PASS]
        if found:
            sys.exit(f"the {stage} payload is not clean: {found}")
    strings = len(Payload(arguments_value).shape.strings)
    print(
        f"payloads: arguments {len(arguments_json)} bytes ({strings} strings), "
        f"result {len(result_json)} bytes; checks: "
        f"input {', '.join(b.spec.name for b in pipeline.inline[Stage.INPUT])}; "
        f"output {', '.join(b.spec.name for b in pipeline.inline[Stage.OUTPUT])}"
    )

    def baseline() -> None:
        json.loads(arguments_json)
        json.loads(result_json)

    def call() -> None:
        pipeline.inspect(Stage.INPUT, arguments_value, before)
        pipeline.inspect(Stage.OUTPUT, result_value, after)

    loads = measure(baseline, args.calls)
    print(f"{'json.loads':<24} p50 {statistics.median(loads):7.1f} us")
    for stage, value, context in stages:
        for bound in pipeline.inline[stage]:
            check = bound.check
            assert check is not None

            def one(check: Any = check, value: Any = value, context: Context = context) -> None:
                check.scan(Payload(value), context)

            p50 = statistics.median(measure(one, args.calls // 5))
            print(f"  {stage:<6} {check.name:<15} p50 {p50:7.1f} us  (alone, on a fresh payload)")
    validator = schema_module._compiled(SCHEMA, False).validator
    alone = statistics.median(measure(lambda: validator.is_valid(arguments_value), args.calls // 5))
    print(f"  (jsonschema alone on the arguments, as the schema check avoids: {alone:.1f} us)")
    samples = measure(call, args.calls)
    p50, p99 = statistics.median(samples), samples[int(len(samples) * 0.99) - 1]
    print(f"{'inline guardrails':<24} p50 {p50:7.1f} us   p99 {p99:7.1f} us")
    report(
        "guardrails",
        ratio=p50 / statistics.median(loads),
        goal="p50 ≤ 200 µs per call",
        met=p50 <= 200,
        figures=f"inline guardrails p50 {p50:.1f} µs, p99 {p99:.1f} µs per call (input and "
        f"output) ÷ json.loads of the same payloads {statistics.median(loads):.1f} µs",
    )


if __name__ == "__main__":
    main()
