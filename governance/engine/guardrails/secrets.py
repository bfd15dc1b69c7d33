"""The ``secrets`` check: credentials in arguments or results.

Two sources, compiled once at import into one RE2 pattern group (one pass over the payload
when it is clean):

* The regular expressions of detect-secrets' key-specific plugins (each
  ``RegexBasedDetector``'s ``denylist``): AWS, Azure, GitHub, GitLab, Slack, Stripe, OpenAI,
  PyPI, npm, SendGrid, Twilio, Discord, Telegram, JWTs, private keys, passwords in URLs, and
  more. Their few Python-only constructs are rewritten for RE2 (a lookbehind at a word start
  becomes a consumed non-word character outside the secret's group; a trailing ``(?!\\w)`` is
  checked in Python). detect-secrets' per-line ``analyze_line`` machinery is not used: it
  runs every pattern separately on every line.
* detect-secrets' Shannon entropy (``calculate_shannon_entropy`` of its high-entropy plugins)
  over candidate tokens, with its default limits (4.5 for base64, 3.0 for hex). Since a
  gateway sees free text rather than quoted strings in code, the candidates are narrower than
  the plugins' own:

  - base64 tokens must mix upper case, lower case and digits (paths, identifiers and prose
    rarely do, random keys nearly always do), be at least ``min_length`` long, and are cut
    after an ``=`` inside them (``name=value``: the value is the candidate). Not candidates:
    subresource-integrity digests (``sha512-...``), ``data:...;base64,`` payloads and SSH
    public-key blobs (``AAAA...``).
  - hex tokens must contain a digit and a letter, and are never 32, 40, 64 or 128 characters
    long: those are the lengths of digests and identifiers a gateway passes all day (MD5 and
    128-bit ids such as trace ids or dashless UUIDs; SHA-1, so git commit and object ids as
    in ``commit 3f2a...`` or mcp-server-git's ``Commit: '3f2a...'``; SHA-256; SHA-512). A hex
    secret of one of those lengths is only found by a key-specific pattern or by a tenant's
    ``deny_patterns``.

Findings are named by kind (``aws_access_key``, ``github_token``, ``private_key``,
``high_entropy_base64``, ...); their detail names the detector, never the value, and their
span covers the secret (a private key's whole PEM block), so ``redact`` can replace it.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import re2
from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

from governance.engine.guardrails.base import ConfigError, Context, Finding, InlineCheck, Payload
from governance.engine.guardrails.patterns import (
    PatternGroup,
    haystack,
    re2_error,
    re2_options,
)

logger = logging.getLogger(__name__)

# Each detector's kinds, one per pattern of its denylist (the last one for any further
# patterns). Left out: IPPublicDetector (an address is not a secret; ``pii`` has an ``ip``
# kind) and KeywordDetector (heuristics for source code, noisy on prose and slow).
DETECTORS: tuple[tuple[type[RegexBasedDetector], tuple[str, ...]], ...] = (
    (AWSKeyDetector, ("aws_access_key", "aws_secret_key")),
    (ArtifactoryDetector, ("artifactory_token",)),
    (AzureStorageKeyDetector, ("azure_storage_key",)),
    (BasicAuthDetector, ("url_password",)),
    (CloudantDetector, ("cloudant_credential",)),
    (DiscordBotTokenDetector, ("discord_token",)),
    (GitHubTokenDetector, ("github_token",)),
    (GitLabTokenDetector, ("gitlab_token",)),
    (IbmCloudIamDetector, ("ibm_cloud_iam_key",)),
    (IbmCosHmacDetector, ("ibm_cos_hmac_key",)),
    (JwtTokenDetector, ("jwt",)),
    (MailchimpDetector, ("mailchimp_key",)),
    (NpmDetector, ("npm_token",)),
    (OpenAIDetector, ("openai_key",)),
    (PrivateKeyDetector, ("private_key",)),
    (PypiTokenDetector, ("pypi_token",)),
    (SendGridDetector, ("sendgrid_key",)),
    (SlackDetector, ("slack_token", "slack_webhook")),
    (SoftlayerDetector, ("softlayer_key",)),
    (SquareOAuthDetector, ("square_oauth_secret",)),
    (StripeDetector, ("stripe_key",)),
    (TelegramBotTokenDetector, ("telegram_token",)),
    (TwilioKeyDetector, ("twilio_key",)),
)
# Kinds whose patterns match a key name or URL around the secret: the secret is group 1.
_SECRET_IN_GROUP = frozenset(
    {
        "aws_secret_key",
        "url_password",
        "cloudant_credential",
        "ibm_cloud_iam_key",
        "ibm_cos_hmac_key",
        "npm_token",
        "softlayer_key",
    }
)
_DELIMITERS = " \t\r\n\"'=:"  # what some patterns match around a token, trimmed off its span

# Entropy candidates judged per payload. A payload of thousands of long random ids (a listing)
# would otherwise cost milliseconds each; past this many, only the named patterns run on.
MAX_ENTROPY_CANDIDATES = 1000


def shannon_entropy(token: str) -> float:
    """Bits per character, as detect-secrets' calculate_shannon_entropy gives for a token made
    of its charset's characters, in one counting pass (theirs counts once per character of
    the charset: about ten times slower)."""
    n = len(token)
    return -sum(c / n * math.log2(c / n) for c in Counter(token).values()) if n else 0.0


_B64_CHARS = "A-Za-z0-9+/=_-"
_DIGEST_HEX_LENGTHS = (32, 40, 64, 128)
_NOT_SECRETS = ("sha1-", "sha256-", "sha384-", "sha512-", "AAAA")  # SRI digests, SSH keys


@dataclass(frozen=True, slots=True)
class _Pattern:
    kind: str
    source: str  # RE2 syntax
    detail: str
    confirm: Callable[[str, int, int], tuple[int, int] | None]  # the span of the secret


class Secrets(InlineCheck):
    name = "secrets"
    defaults: ClassVar[Mapping[str, Any]] = {
        "entropy": True,
        "base64_limit": 4.5,
        "hex_limit": 3.0,
        "min_length": 20,  # characters of an entropy candidate
    }

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        if not isinstance(self.config["entropy"], bool):
            raise ConfigError("entropy", "true or false")
        for key in ("base64_limit", "hex_limit"):
            value = self.config[key]
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 8:
                raise ConfigError(key, "bits of entropy per character, above 0 and at most 8")
        length = self.config["min_length"]
        if not isinstance(length, int) or isinstance(length, bool) or not 8 <= length <= 1000:
            raise ConfigError("min_length", "a whole number of characters from 8 to 1000")
        self.base64_limit = float(self.config["base64_limit"])
        self.hex_limit = float(self.config["hex_limit"])
        self.min_length: int = length
        self.patterns, self.group = _group(self.config["entropy"], length)

    def scan(self, payload: Payload, context: Context) -> list[Finding]:
        hay = haystack(payload)
        named: list[Finding] = []
        entropic: list[Finding] = []
        candidates = 0
        for which, index, piece, match in self.group.search(hay):
            pattern = self.patterns[which]
            if pattern.kind.startswith("high_entropy_"):
                candidates += 1
                if candidates > MAX_ENTROPY_CANDIDATES:
                    continue
                found = self._entropic(pattern.kind, piece, match)
                if found is not None:
                    span, detail = found
                    entropic.append(Finding(pattern.kind, hay.paths[index], detail, span))
                continue
            group = 1 if pattern.kind in _SECRET_IN_GROUP else 0
            span = pattern.confirm(piece, *match.span(group))
            if span is not None:
                named.append(Finding(pattern.kind, hay.paths[index], pattern.detail, span))
        return named + [f for f in entropic if not _overlaps(f, named)]

    def _entropic(self, kind: str, piece: str, match: Any) -> tuple[tuple[int, int], str] | None:
        start, end = match.span(1) if match.re.groups else match.span()
        if kind == "high_entropy_base64":
            token = piece[start:end]
            inner = token.rstrip("=")
            if "=" in inner:  # name=value: the value is the candidate
                start += inner.rindex("=") + 1
                token = piece[start:end]
            if (
                end - start < self.min_length
                or token.startswith(_NOT_SECRETS)
                or piece[max(0, start - 7) : start] == "base64,"
                or not _mixed(token)
            ):
                return None
            entropy = shannon_entropy(token)
            limit = self.base64_limit
        else:
            token = piece[start:end]
            if not (any(c.isdigit() for c in token) and any(c.isalpha() for c in token)):
                return None
            entropy = shannon_entropy(token)
            limit = self.hex_limit
        if entropy <= limit:
            return None
        return (start, end), f"entropy {entropy:.2f} bits over {end - start} characters"


def _mixed(token: str) -> bool:
    return (
        any(c.isupper() for c in token)
        and any(c.islower() for c in token)
        and any(c.isdigit() for c in token)
    )


def _overlaps(finding: Finding, others: list[Finding]) -> bool:
    start, end = finding.span or (0, 0)
    return any(
        o.path == finding.path and o.span is not None and o.span[0] < end and start < o.span[1]
        for o in others
    )


# --- the patterns -------------------------------------------------------------------------------
SKIPPED: list[str] = []  # detector patterns RE2 could not take (tests require none)


def _named_patterns() -> list[_Pattern]:
    patterns = []
    for detector, kinds in DETECTORS:
        for i, regex in enumerate(detector.denylist):
            kind = kinds[min(i, len(kinds) - 1)]
            where = f"{detector.__name__}.denylist[{i}]"
            try:
                source, not_followed = _re2_source(regex)
                re2.compile(source, re2_options())
            except (ValueError, re2.error) as exc:
                SKIPPED.append(where)
                logger.warning("secrets: %s left out: %s", where, re2_error(exc))
                continue
            detail = f"detect-secrets {detector.__name__}"
            patterns.append(_Pattern(kind, source, detail, _confirm(kind, not_followed)))
    return patterns


_LOOKAHEAD = re.compile(r"\(\?!(\\w|\[[^\]]*\])\)")  # (?!\w), (?![a-z_-])
_HUGE_REPEAT = re.compile(r"\{(\d+),(\d{4,})\}")  # RE2 repeats at most 1000 times


def _re2_source(regex: re.Pattern[str]) -> tuple[str, re.Pattern[str] | None]:
    """A detect-secrets pattern in RE2 syntax, and what must not follow the secret (from a
    negative lookahead, which RE2 lacks: checked in Python on the character after it)."""
    source = regex.pattern
    if regex.flags & re.VERBOSE and re.search(r"\s", source):
        raise ValueError("a verbose pattern")
    lookaheads = _LOOKAHEAD.findall(source)
    if len(lookaheads) > 1:
        raise ValueError("more than one lookahead")
    not_followed = re.compile(lookaheads[0]) if lookaheads else None
    source = _LOOKAHEAD.sub("", source)
    source = _HUGE_REPEAT.sub(lambda m: "{" + m.group(1) + ",}", source)
    source = source.replace(r"(?:(?<=\W)|(?<=^))", r"(?:^|\W)")
    if source.endswith("*?"):
        source = source[:-2] + "*"  # the JWT pattern: its span takes the signature too
    flags = "mi" if regex.flags & re.IGNORECASE else "m"
    return f"(?{flags}:{source})", not_followed


def _confirm(
    kind: str, not_followed: re.Pattern[str] | None
) -> Callable[[str, int, int], tuple[int, int] | None]:
    trim = _DELIMITERS + "." if kind == "jwt" else _DELIMITERS

    def confirm(piece: str, start: int, end: int) -> tuple[int, int] | None:
        if start < 0:
            return None
        if not_followed is not None and not_followed.match(piece, end):
            return None
        if kind not in _SECRET_IN_GROUP:
            while start < end and piece[start] in trim:
                start += 1
            while end > start and piece[end - 1] in trim:
                end -= 1
        if start >= end:
            return None
        if kind == "jwt" and not JwtTokenDetector.is_formally_valid(piece[start:end]):
            return None
        if kind == "private_key":
            return _key_block(piece, start, end)
        return start, end

    return confirm


def _key_block(piece: str, start: int, end: int) -> tuple[int, int]:
    """The whole key: from the ``-----BEGIN`` line to its ``-----END ...-----``, or to the end
    of the string when it has none (a truncated key is still a key)."""
    line = piece.rfind("\n", 0, start) + 1
    dashes = piece.rfind("-----", line, start)
    if dashes != -1:
        start = dashes
    if "BEGIN" in piece[start:end]:
        stop = piece.find("-----END", end)
        if stop != -1:
            close = piece.find("-----", stop + len("-----END"))
            return start, close + len("-----") if close != -1 else len(piece)
    return start, len(piece)


def _entropy_patterns(min_length: int) -> list[_Pattern]:
    chars = f"[{_B64_CHARS}]*"
    classes = ("[A-Z]", "[a-z]", "[0-9]")
    orders = [(a, b, c) for a in classes for b in classes for c in classes if len({a, b, c}) == 3]
    mixed = "|".join(f"{chars}{a}{chars}{b}{chars}{c}{chars}" for a, b, c in orders)
    base64 = f"(?:^|[^{_B64_CHARS}])({mixed})"
    lengths, low = [], min_length
    for digest in (*_DIGEST_HEX_LENGTHS, None):
        if digest is None:
            lengths.append(f"[0-9a-fA-F]{{{low},}}")
        elif digest >= low:
            if digest > low:
                lengths.append(f"[0-9a-fA-F]{{{low},{digest - 1}}}")
            low = digest + 1
    hex_ = rf"\b(?:{'|'.join(lengths)})\b"
    never: Callable[[str, int, int], None] = lambda piece, start, end: None  # noqa: E731
    return [
        _Pattern("high_entropy_base64", base64, "", never),
        _Pattern("high_entropy_hex", hex_, "", never),
    ]


_NAMED = _named_patterns()


@cache
def _group(entropy: bool, min_length: int) -> tuple[tuple[_Pattern, ...], PatternGroup]:
    patterns = tuple(_NAMED + (_entropy_patterns(min_length) if entropy else []))
    return patterns, PatternGroup([p.source for p in patterns], re2_options(max_mem=64 << 20))
