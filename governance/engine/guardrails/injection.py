"""The ``injection`` check: text written to steer the model that reads it.

Three kinds, each switchable:

* ``override_phrase``: the phrasing of injected instructions, case-insensitive. "Ignore /
  disregard / forget (all) previous / prior / above instructions", role reassignment ("you are
  now DAN", "you are now an unrestricted AI"), "new instructions:", asking for the system
  prompt, chat-template markers (``<|im_start|>``, ``[INST]``, ``<<SYS>>``), and asking to keep
  something from the user ("do not tell the user"). Redacted as ``[REDACTED:override_phrase]``.
* ``invisible_unicode``: characters a person does not see and a model does read: Unicode tag
  characters (U+E0000-U+E007F, which spell hidden ASCII), zero-width characters (U+200B-U+200D,
  U+2060-U+2064, U+FEFF) and bidirectional controls (U+202A-U+202E, U+2066-U+2069). Removed
  entirely on redaction. A joiner inside an emoji sequence and a byte-order mark at the start
  of a string are left alone.
* ``exfiltration_image``: an image the client would fetch, with data in its URL: a markdown
  image ``![alt](https://host/...)`` or an HTML ``<img src=...>`` whose URL has a query string,
  or a long path segment, host label or path (data-looking), or percent-encoded bytes. Hosts
  in ``allowed_image_hosts`` (``example.com`` or ``*.example.com``) pass. Replaced by
  ``[image removed]``.

``description_findings`` scans a tool's description with the defaults, for tool approval.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, ClassVar
from urllib.parse import urlsplit

from governance.engine.guardrails.base import (
    ConfigError,
    Context,
    Finding,
    InlineCheck,
    Payload,
    Stage,
)
from governance.engine.guardrails.patterns import PatternGroup, haystack, re2_options

_TARGETS = (
    r"(?:instructions?|prompts?|directions?|rules|guidelines|guidance|context|messages?"
    r"|commands?|orders|constraints|directives?)"
)
# (detail, RE2 pattern); every one case-insensitive.
PHRASES: tuple[tuple[str, str], ...] = (
    (
        "instruction override",
        r"\b(?:ignore|disregard|forget|override|bypass)\s+"
        r"(?:(?:all|any|each|every|the|your|my|these|those|of|everything)\s+){0,3}"
        r"(?:previous|prior|preceding|earlier|above|foregoing|former|original|initial|system"
        rf"|developer)\s+{_TARGETS}\b",
    ),
    (
        "instruction override",
        r"\b(?:ignore|disregard|forget)\s+(?:everything|all)\s+"
        r"(?:above|before|so\s+far|you\s+(?:were|have\s+been|'ve\s+been)\s+told)\b",
    ),
    (
        "role reassignment",
        r"\byou\s+are\s+now\s+(?:(?:a|an|the|my|in)\s+)?(?:dan\b|unrestricted|unfiltered"
        r"|uncensored|jailbroken|developer\s+mode|evil|free\s+(?:from|of)\s+"
        r"|no\s+longer\s+(?:bound|restricted|an?\s+(?:ai|assistant|language\s+model)))",
    ),
    (
        "role reassignment",
        r"\bfrom\s+now\s+on,?\s+you\s+(?:are|will\s+(?:act|behave|respond\s+as|obey)"
        r"|must\s+(?:ignore|obey|act))\b",
    ),
    (
        "injected instructions",
        r"\b(?:new|updated|revised|real|actual|additional|secret|hidden|important)\s+"
        r"(?:system\s+)?instructions?\s*:",
    ),
    (
        "system prompt request",
        r"\b(?:reveal|print|show|output|repeat|leak|display|dump|disclose|tell\s+me)\s+"
        r"(?:\w+\s+){0,3}?(?:system|initial|original|hidden)\s+(?:prompt|instructions)\b",
    ),
    ("system prompt request", r"\bsystem\s+prompt\s*:"),
    (
        "chat template marker",
        r"<\|(?:im_start|im_end|system|endoftext|start_header_id|end_header_id|eot_id)\|>"
        r"|\[/?INST\]|<</?SYS>>|<\s*/?\s*system\s*>",
    ),
    (
        "secrecy request",
        r"\b(?:do\s+not|don'?t|never)\s+(?:tell|inform|alert|notify|warn|let"
        r"|mention\s+(?:this\s+|it\s+)?to|reveal\s+(?:this\s+|it\s+)?to)\s+the\s+(?:user|human)\b",
    ),
    (
        "secrecy request",
        r"\bwithout\s+(?:telling|informing|alerting|notifying|asking)\s+the\s+(?:user|human)\b",
    ),
)
_INVISIBLE = (
    r"[\x{E0000}-\x{E007F}\x{200B}-\x{200D}\x{2060}-\x{2064}\x{FEFF}"
    r"\x{202A}-\x{202E}\x{2066}-\x{2069}]+"
)
_MARKDOWN_IMAGE = r"!\[[^\]\n]{0,1000}\]\(\s*<?((?:https?:)?//[^\s)>]+)>?[^)\n]{0,300}\)"
_HTML_IMAGE = r"(?i)<img\b[^>]{0,1000}?\bsrc\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)[^>]{0,1000}>"
_DATA_SEGMENT = 24  # characters in one path segment or host label that look like data
_DATA_PATH = 80  # characters of path that look like data


class Injection(InlineCheck):
    name = "injection"
    defaults: ClassVar[Mapping[str, Any]] = {
        "phrases": True,
        "invisible": True,
        "images": True,
        "allowed_image_hosts": [],
    }

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        for key in ("phrases", "invisible", "images"):
            if not isinstance(self.config[key], bool):
                raise ConfigError(key, "true or false")
        hosts = self.config["allowed_image_hosts"]
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ConfigError("allowed_image_hosts", 'a list of hosts: "example.com", "*.cdn.net"')
        self.exact, suffixes = set(), []
        for host in hosts:
            wildcard = host.startswith("*.")
            name = (host[2:] if wildcard else host).lower().rstrip(".")
            if not name or any(c in name for c in "/:@?#* ") or "." not in name:
                raise ConfigError("allowed_image_hosts", f"{host!r} is not a host name")
            (suffixes.append("." + name) if wildcard else self.exact.add(name))
        self.suffixes = tuple(suffixes)
        self.kinds, self.group = _group(
            self.config["phrases"], self.config["invisible"], self.config["images"]
        )

    def scan(self, payload: Payload, context: Context) -> list[Finding]:
        hay = haystack(payload)
        findings = []
        for pattern, index, piece, match in self.group.search(hay):
            kind, detail = self.kinds[pattern]
            path, span = hay.paths[index], match.span()
            if kind == "invisible_unicode":
                found = piece[span[0] : span[1]]
                if _harmless(piece, span, found):
                    continue
                codes = ", ".join(sorted({f"U+{ord(c):04X}" for c in found})[:5])
                detail = f"{len(found)} invisible characters ({codes})"
            elif kind == "exfiltration_image":
                why = self._carries_data(match.group(1))
                if why is None:
                    continue
                detail = why
            findings.append(Finding(kind, path, detail, span))
        return findings

    def replacement(self, finding: Finding) -> str:
        if finding.kind == "invisible_unicode":
            return ""
        if finding.kind == "exfiltration_image":
            return "[image removed]"
        return super().replacement(finding)

    def _carries_data(self, url: str) -> str | None:
        """Why an image URL could carry data out, or None when it cannot (or may)."""
        try:
            parts = urlsplit(url if not url.startswith("//") else "https:" + url)
            host = (parts.hostname or "").rstrip(".")
        except ValueError:
            return "an image with an unreadable URL"
        if host in self.exact or host.endswith(self.suffixes):
            return None
        where = f"an image from {host[:100] or 'an unnamed host'}"
        if parts.query:
            return f"{where} with a query string"
        segments = [s for s in parts.path.split("/") if s]
        if "%" in parts.path or len(parts.path) > _DATA_PATH:
            return f"{where} with a data-looking path"
        if any(len(s.rsplit(".", 1)[0]) >= _DATA_SEGMENT for s in segments):
            return f"{where} with a data-looking path"
        if any(len(label) >= _DATA_SEGMENT for label in host.split(".")):
            return f"{where} with a data-looking host name"
        return None


def _harmless(piece: str, span: tuple[int, int], found: str) -> bool:
    start, end = span
    if found == "\ufeff" and start == 0:
        return True  # a byte-order mark
    if set(found) == {"\u200d"} and start > 0 and end < len(piece):
        return not piece[start - 1].isascii() and not piece[end].isascii()  # 👩‍💻
    return False


@cache
def _group(
    phrases: bool, invisible: bool, images: bool
) -> tuple[tuple[tuple[str, str], ...], PatternGroup]:
    entries: list[tuple[str, str, str]] = []
    if phrases:
        entries += [("override_phrase", detail, f"(?i:{p})") for detail, p in PHRASES]
    if invisible:
        entries.append(("invisible_unicode", "", _INVISIBLE))
    if images:
        entries.append(("exfiltration_image", "", _MARKDOWN_IMAGE))
        entries.append(("exfiltration_image", "", _HTML_IMAGE))
    kinds = tuple((kind, detail) for kind, detail, _ in entries)
    return kinds, PatternGroup([p for _, _, p in entries], re2_options(max_mem=32 << 20))


_DEFAULT = Injection({})
_DESCRIPTION = Context(Stage.OUTPUT, tool="")


def description_findings(text: str) -> list[Finding]:
    """Injection markers in a tool's description (or any prose of its schema), with the
    default configuration. Paths are empty: the caller knows where the text came from."""
    return _DEFAULT.scan(Payload(text), _DESCRIPTION)
