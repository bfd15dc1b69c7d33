"""Permission decision time with 10, 100 and 1,000 rules for one agent.

The rules are a seeded, realistic mix: per-server and per-tool globs and wildcard globs
(``*__delete_*``), allow / deny / require_approval / shadow, with argument conditions of every
operator (path_under, host_in, range, regex, glob, prefix, in, equals). Each decision is one
``AgentPolicy.decide`` on calls drawn from the same tool catalog, so the measured figure
includes matching the name against every glob, the validity windows and the conditions of
every rule that matches. The baseline is the same decision with an empty policy, in the same
run.

    .venv/bin/python bench/policy_decide.py [--calls 20000]

Goal on the reference machine (2 cores): p50 <= 20 us at 1,000 rules.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import report
from governance.engine.conditions import ConditionSpec
from governance.engine.policy import AgentPolicy, Effect, RuleSpec, TenantPolicy

SERVERS = [f"srv{i}" for i in range(40)] + ["git", "fetch", "fs", "db"]
VERBS = ["get", "list", "read", "write", "delete", "create", "update", "run", "search", "push"]
TOOLS = [f"{server}__{verb}_{noun}" for server in SERVERS for verb in VERBS for noun in ("a", "b")]
AGENT = 1


def condition(rng: random.Random) -> ConditionSpec:
    kind = rng.randrange(8)
    if kind == 0:
        return ConditionSpec("$.path", "path_under", rng.choice(["/srv/repos", "/data", "/x"]))
    if kind == 1:
        return ConditionSpec("$.url", "host_in", ["example.com", "*.python.org", "10.0.0.1"])
    if kind == 2:
        return ConditionSpec("$.limit", "range", {"min": 0, "max": rng.randrange(10, 1000)})
    if kind == 3:
        return ConditionSpec("$.query", "regex", rng.choice([r"(?i)drop\s+table", r"^select "]))
    if kind == 4:
        return ConditionSpec("$.branch", "glob", rng.choice(["release/*", "feature-*"]))
    if kind == 5:
        return ConditionSpec("$.path", "prefix", "/srv/")
    if kind == 6:
        return ConditionSpec("$.mode", "in", ["read", "list", "stat"])
    return ConditionSpec("$.force", "equals", True, negate=rng.random() < 0.5)


def rules(count: int, seed: int = 7) -> tuple[RuleSpec, ...]:
    rng = random.Random(seed)
    out = []
    for rule_id in range(1, count + 1):
        shape = rng.random()
        if shape < 0.1:  # wildcards across servers
            resource = f"*__{rng.choice(VERBS)}_*"
        elif shape < 0.3:  # a whole server
            resource = f"{rng.choice(SERVERS)}__*"
        else:  # one tool
            resource = rng.choice(TOOLS)
        effect = rng.choices(list(Effect), weights=[2, 1, 7])[0]
        conditions = tuple(condition(rng) for _ in range(rng.choice([0, 1, 1, 2, 3])))
        out.append(
            RuleSpec(
                id=rule_id,
                effect=effect,
                resource=resource,
                conditions=conditions,
                agent_id=AGENT,
                shadow=rng.random() < 0.05,
            )
        )
    return tuple(out)


def calls(count: int, seed: int = 11) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    return [
        (
            rng.choice(TOOLS),
            {
                "path": rng.choice(["/srv/repos/app/main.py", "/etc/passwd", "/data/x/../y"]),
                "url": rng.choice(["https://docs.python.org/3/", "https://evil.test/"]),
                "limit": rng.randrange(0, 2000),
                "query": rng.choice(["select 1", "DROP  TABLE users"]),
                "branch": rng.choice(["release/1.2", "main"]),
                "mode": rng.choice(["read", "write"]),
                "force": rng.random() < 0.2,
            },
        )
        for _ in range(count)
    ]


def measure(policy: AgentPolicy, workload: list[tuple[str, dict]]) -> list[float]:
    """Microseconds per decision, one sample per call."""
    now = time.time()
    decide, clock = policy.decide, time.perf_counter_ns
    for name, arguments in workload[:1000]:  # warm caches and the allocator
        decide("tool", name, arguments, now=now)
    samples = []
    for name, arguments in workload:
        start = clock()
        decide("tool", name, arguments, now=now)
        samples.append((clock() - start) / 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    workload = calls(args.calls)

    baseline = statistics.median(measure(TenantPolicy().for_agent(AGENT), workload))
    print(f"{'empty policy':<12} p50 {baseline:6.2f} us")
    p50s = {}
    for count in (10, 100, 1000):
        started = time.perf_counter()
        policy = TenantPolicy(rules(count)).for_agent(AGENT)
        compiled_ms = (time.perf_counter() - started) * 1000
        samples = sorted(measure(policy, workload))
        p50s[count] = statistics.median(samples)
        p99 = samples[int(len(samples) * 0.99) - 1]
        matched = statistics.mean(len(policy._candidates("tool", name)) for name, _ in workload)
        print(
            f"{count:>5} rules  p50 {p50s[count]:6.2f} us   p99 {p99:6.2f} us   "
            f"rules matching a name: {matched:5.1f} on average   compile {compiled_ms:6.1f} ms"
        )
    report(
        "policy_decide",
        ratio=p50s[1000] / baseline,
        goal="p50 ≤ 20 µs at 1,000 rules",
        met=p50s[1000] <= 20,
        figures=f"decision at 1,000 rules p50 {p50s[1000]:.2f} µs ÷ empty policy {baseline:.2f} µs",
    )


if __name__ == "__main__":
    main()
