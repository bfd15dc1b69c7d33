"""The guardrail pipeline: which checks apply to a call, and what their findings do.

``TenantGuardrails`` holds a tenant's stored guardrail rows as plain data. ``for_call`` picks,
for each check, the most specific enabled row matching the agent and the tool, and builds a
``Pipeline`` (cached: one per agent and tool per snapshot). ``Pipeline.inspect`` runs the
inline checks of a stage in order and returns an ``Inspection``: the value to pass on
(redacted if a check redacted), every verdict, and the verdict that blocked, if one did.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from governance.engine.guardrails.base import (
    Action,
    ConfigError,
    Context,
    Finding,
    InlineCheck,
    Json,
    Outcome,
    Payload,
    Stage,
)
from governance.engine.guardrails.checks import INLINE_CHECKS

logger = logging.getLogger(__name__)

SLOW_CHECKS = frozenset({"injection_similarity"})  # run in Celery: governance/slowchecks/
MAX_FINDINGS = 20  # per verdict in the audit record; the count says how many there were


@dataclass(frozen=True, slots=True)
class GuardrailSpec:
    """One stored guardrail row, as the engine reads it."""

    id: int
    name: str  # the check: schema, pii, injection_similarity, ...
    agent_id: int | None = None
    tool: str = ""  # a glob over exposed tool names; "" is every tool
    enabled: bool = True
    stage: str = "both"  # input | output | both
    action: Action = Action.BLOCK
    failure_mode: str = "closed"  # closed | open
    mode: str = "blocking"  # slow checks: blocking | post_hoc
    timeout_seconds: float = 2.0
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def specificity(self) -> int:
        return (2 if self.agent_id is not None else 0) + (1 if self.tool else 0)

    def matches(self, agent_id: int, tool: str) -> bool:
        return (self.agent_id is None or self.agent_id == agent_id) and (
            not self.tool or fnmatchcase(tool, self.tool)
        )

    def stages(self) -> frozenset[Stage]:
        return frozenset(Stage) if self.stage == "both" else frozenset({Stage(self.stage)})


@dataclass(frozen=True, slots=True)
class Verdict:
    check: str
    stage: Stage
    action: Action
    outcome: Outcome
    findings: tuple[Finding, ...] = ()
    error: str = ""
    guardrail_id: int | None = None

    def as_record(self) -> dict[str, Any]:
        """The verdict as the audit record keeps it: kinds and places, never the values."""
        record: dict[str, Any] = {
            "check": self.check,
            "stage": str(self.stage),
            "action": str(self.action),
            "verdict": str(self.outcome),
            "guardrail": self.guardrail_id,
        }
        if self.findings:
            record["found"] = len(self.findings)
            record["findings"] = [f.as_record() for f in self.findings[:MAX_FINDINGS]]
        if self.error:
            record["error"] = self.error
        return record

    def summary(self) -> str:
        """One line for the agent: which check, and what it found (never the values)."""
        if self.error:
            return f"guardrail {self.check}: {self.error}"
        kinds = sorted({f.kind for f in self.findings})
        places = sorted({f.detail or "" for f in self.findings if f.kind in ("schema", "size")})
        found = "; ".join(p for p in places if p) or ", ".join(kinds)
        return f"guardrail {self.check} found {found} in the {self.stage}"


@dataclass(frozen=True, slots=True)
class Inspection:
    value: Json  # what goes on: redacted where a check redacted
    verdicts: tuple[Verdict, ...] = ()
    blocked: Verdict | None = None
    # What the audit trail keeps: ``value`` with what flagging or blocking checks found
    # redacted too, so a flagged secret is not written to disk in the clear.
    recorded: Json = None

    @property
    def flagged(self) -> bool:
        return any(v.outcome is not Outcome.PASS for v in self.verdicts)

    def records(self) -> list[dict[str, Any]]:
        return [v.as_record() for v in self.verdicts]


@dataclass(frozen=True, slots=True)
class _Bound:
    """A check built from its effective row; ``error`` when its config is unusable."""

    spec: GuardrailSpec
    check: InlineCheck | None
    error: str = ""


RECORD_MAX_STRING = 4096  # the default cut of strings in what the audit trail keeps


class Pipeline:
    """The checks that apply to one agent's calls of one tool. ``record_limit`` cuts long
    strings in ``Inspection.recorded``, before anything is scanned for it."""

    def __init__(
        self, specs: Iterable[GuardrailSpec], record_limit: int = RECORD_MAX_STRING
    ) -> None:
        self.record_limit = record_limit
        self.inline: dict[Stage, list[_Bound]] = {stage: [] for stage in Stage}
        self.slow: dict[Stage, list[GuardrailSpec]] = {stage: [] for stage in Stage}
        for spec in specs:
            if spec.name in SLOW_CHECKS:
                for stage in spec.stages():
                    self.slow[stage].append(spec)
                continue
            bound = _bind(spec)
            for stage in spec.stages():
                if bound.check is None or stage in bound.check.stages:
                    self.inline[stage].append(bound)

    def inspect(self, stage: Stage, value: Json, context: Context) -> Inspection:
        checks = self.inline[stage]
        if not checks:
            return Inspection(value, recorded=Payload(value).clipped(self.record_limit))
        payload, verdicts, unredacted = Payload(value), [], []
        for i, bound in enumerate(checks):
            verdict, redacted = _run(bound, payload, context)
            verdicts.append(verdict)
            if redacted is not None:
                payload = Payload(redacted)  # later checks see the redacted value
            elif verdict.findings and bound.check is not None:
                unredacted.append(bound.check)
            if verdict.outcome is Outcome.BLOCK:
                # The checks not run still redact what the audit trail keeps of a blocked call.
                unredacted += [b.check for b in checks[i + 1 :] if b.check is not None]
                break
        blocked = verdicts[-1] if verdicts[-1].outcome is Outcome.BLOCK else None
        return Inspection(
            payload.value, tuple(verdicts), blocked, self._recorded(payload, unredacted, context)
        )

    def recorded(self, stage: Stage, value: Json, context: Context) -> Json:
        """What the audit trail keeps of a value no check judged (a call refused before
        the guardrails): whatever any check of the stage finds, redacted where it can be."""
        checks = [b.check for b in self.inline[stage] if b.check is not None]
        return self._recorded(Payload(value), checks, context)

    def _recorded(self, payload: Payload, checks: list[InlineCheck], context: Context) -> Json:
        """The payload for the audit trail: clipped first (so this scan is bounded), then what
        flagging or blocking checks found redacted where those checks can redact (scanned
        afresh: a later redaction may have moved it)."""
        clipped = payload.clipped(self.record_limit)
        recorded = payload if clipped is payload.value else Payload(clipped)
        for check in checks:
            try:
                findings = check.scan(recorded, context)
                redacted = check.redact(recorded, findings) if findings else None
            except Exception:
                logger.exception("redacting %s findings for the audit trail failed", check.name)
                continue
            if redacted is not None:
                recorded = Payload(redacted)
        return recorded.value


def _bind(spec: GuardrailSpec) -> _Bound:
    cls = INLINE_CHECKS.get(spec.name)
    if cls is None:
        return _Bound(spec, None, f"unknown check {spec.name!r}")
    try:
        return _Bound(spec, cls(spec.config))
    except ConfigError as exc:
        return _Bound(spec, None, f"misconfigured: {exc}")


def _run(bound: _Bound, payload: Payload, context: Context) -> tuple[Verdict, Json | None]:
    spec = bound.spec

    def verdict(outcome: Outcome, findings: Iterable[Finding] = (), error: str = "") -> Verdict:
        return Verdict(
            spec.name, context.stage, spec.action, outcome, tuple(findings), error, spec.id
        )

    try:
        if bound.check is None:
            raise _CheckFailed(bound.error)
        findings = bound.check.scan(payload, context)
        if not findings:
            return verdict(Outcome.PASS), None
        if spec.action is Action.FLAG:
            return verdict(Outcome.FLAG, findings), None
        if spec.action is Action.REDACT:
            redacted = bound.check.redact(payload, findings)
            if redacted is not None:
                return verdict(Outcome.REDACT, findings), redacted
        return verdict(Outcome.BLOCK, findings), None
    except Exception as exc:  # a failing check must never take the call down with it
        reason = str(exc) if isinstance(exc, _CheckFailed) else f"check failed: {exc!r}"[:300]
        if not isinstance(exc, _CheckFailed):
            logger.exception("guardrail %s failed", spec.name)
        outcome = Outcome.BLOCK if spec.failure_mode == "closed" else Outcome.ERROR
        return verdict(outcome, error=reason), None


class _CheckFailed(Exception):
    pass


class TenantGuardrails:
    """A tenant's guardrail rows; ``for_call`` resolves and caches the pipeline of a call."""

    def __init__(
        self, specs: Iterable[GuardrailSpec] = (), record_limit: int = RECORD_MAX_STRING
    ) -> None:
        self.specs, self.record_limit = tuple(specs), record_limit
        self._pipelines: dict[tuple[int, str], Pipeline] = {}

    def for_call(self, agent_id: int, tool: str, *, cache: bool = True) -> Pipeline:
        """The call's pipeline; cached per agent and tool unless ``cache`` is off (a name
        that is not in the catalog)."""
        key = (agent_id, tool)
        pipeline = self._pipelines.get(key)
        if pipeline is None and not cache:
            return Pipeline(self.effective(agent_id, tool), self.record_limit)
        if pipeline is None:
            if len(self._pipelines) > 100_000:  # agents by catalog tools; a backstop only
                self._pipelines.clear()
            pipeline = self._pipelines[key] = Pipeline(
                self.effective(agent_id, tool), self.record_limit
            )
        return pipeline

    def effective(self, agent_id: int, tool: str) -> list[GuardrailSpec]:
        """For each check, its most specific matching row with the config of every less
        specific one beneath it; disabled checks left out. In check order of first row."""
        chains: dict[str, list[GuardrailSpec]] = {}
        for spec in self.specs:
            if spec.matches(agent_id, tool):
                chains.setdefault(spec.name, []).append(spec)
        effective = []
        for chain in chains.values():
            chain.sort(key=lambda s: (s.specificity, s.id))
            top = chain[-1]
            if not top.enabled:
                continue
            config: dict[str, Any] = {}
            for spec in chain:
                config.update(spec.config)
            effective.append(replace(top, config=config))
        order = {name: i for i, name in enumerate(INLINE_CHECKS)}  # cheap, protective first
        return sorted(effective, key=lambda s: (order.get(s.name, len(order)), s.id))


def config_validate(name: str, config: Mapping[str, Any]) -> None:
    """Raise ConfigError if ``config`` is not usable for check ``name`` (the admin form and the
    services call this before saving)."""
    cls = INLINE_CHECKS.get(name)
    if cls is not None:
        cls(config)
    elif name not in SLOW_CHECKS:
        raise ConfigError("name", f"unknown check {name!r}")
