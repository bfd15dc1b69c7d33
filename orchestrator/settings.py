"""Django settings. Every value comes from an environment variable (docs/operations.md has
the table)."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.env import env_bool, env_float, env_int, env_list, env_path, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = env_path("DATA_DIR", BASE_DIR / "var")

SECRET_KEY = env_str("SECRET_KEY", "dev-only-insecure-key-change-me-in-production-0123456789")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
# Behind a proxy that ends TLS: the dashboard's forms post from https://… origins, which
# Django's CSRF check must trust; and the proxy's X-Forwarded-Proto says the request was https.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "django_htmx",
    "orchestrator",
    "governance",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "orchestrator.urls"
ASGI_APPLICATION = "orchestrator.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database(url: str) -> dict[str, object]:
    """DATABASE_URL → Django DATABASES entry. Empty means the embedded SQLite file."""
    if not url:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "orchestrator.sqlite3",
            "OPTIONS": {
                # WAL lets readers run beside the audit writer; IMMEDIATE avoids lock-upgrade
                # deadlocks between processes; the timeout waits out a busy writer.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            # Tests too run on a file, as production does: an in-memory database shared
            # between threads fails at once with "table is locked" instead of waiting.
            "TEST": {"NAME": DATA_DIR / f"test-{os.getpid()}.sqlite3"},
        }
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"DATABASE_URL must be postgres://…, got scheme {parts.scheme!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        # Django's psycopg 3 pool: each process keeps up to this many connections open and
        # lends them out per request or task, instead of connecting each time.
        "OPTIONS": {"pool": {"min_size": 1, "max_size": DATABASE_POOL_SIZE, "timeout": 10}},
    }


DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 10, minimum=1)
DATABASES = {"default": _database(env_str("DATABASE_URL", ""))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True  # serve app and project static files without collectstatic
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboard/"

REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 times out idle consumers without socket_timeout=None (DESIGN.md §5).
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery: Redis when configured, otherwise a broker on the local filesystem so the embedded
# default needs no server of its own.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
CELERY_RESULT_BACKEND = env_str(
    "CELERY_RESULT_BACKEND", REDIS_URL or f"file://{DATA_DIR / 'celery-results'}"
)
CELERY_BROKER_TRANSPORT_OPTIONS = (
    # A Redis that hangs must not hang the process sending a task (a gateway submitting a
    # slow check): the send fails after a few seconds instead, and the check fails by its mode.
    {"socket_timeout": 5, "socket_connect_timeout": 2}
    if CELERY_BROKER_URL.startswith("redis")
    else {}
    if not CELERY_BROKER_URL.startswith("filesystem")
    else {
        "data_folder_in": str(DATA_DIR / "celery-broker"),
        "data_folder_out": str(DATA_DIR / "celery-broker"),
        "processed_folder": str(DATA_DIR / "celery-processed"),
        "control_folder": str(DATA_DIR / "celery-control"),  # not ./control in the checkout
        "store_processed": False,
    }
)
# The embedded broker and result store are folders: make sure they exist.
_celery_folders = [
    v for k, v in CELERY_BROKER_TRANSPORT_OPTIONS.items() if k.endswith(("_in", "_out", "_folder"))
]
if CELERY_RESULT_BACKEND.startswith("file://"):
    _celery_folders.append(CELERY_RESULT_BACKEND.removeprefix("file://"))
for _folder in _celery_folders:
    Path(str(_folder)).mkdir(parents=True, exist_ok=True)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Billiard waits this long before requeueing the task of a killed pool child (its default: 10 s).
CELERY_WORKER_LOST_WAIT = env_float("CELERY_WORKER_LOST_WAIT", 2.0, minimum=0.1)
# How often pending slow checks left by a dead worker are re-sent. Run exactly one beat: the
# embedded worker has it built in (-B); in production, one `celery -A orchestrator beat`.
SLOW_CHECK_SWEEP_SECONDS = env_float("SLOW_CHECK_SWEEP_SECONDS", 15.0, minimum=1.0)
# A signed checkpoint of every tenant's audit chain head that moved, this often.
AUDIT_CHECKPOINT_SECONDS = env_float("AUDIT_CHECKPOINT_SECONDS", 60.0, minimum=1.0)
# Retention pruning (tenants with an audit retention period), this often.
AUDIT_PRUNE_SECONDS = env_float("AUDIT_PRUNE_SECONDS", 3600.0, minimum=1.0)
# How often calls left unanswered by a dead gateway process are looked for (NODE_LEASE_SECONDS).
NODE_SWEEP_SECONDS = env_float("NODE_SWEEP_SECONDS", 10.0, minimum=0.5)
CELERY_BEAT_SCHEDULE = {
    "sweep-slow-checks": {
        "task": "governance.sweep_slow_checks",
        "schedule": SLOW_CHECK_SWEEP_SECONDS,
        "kwargs": {"older_than_seconds": 30},
    },
    "audit-checkpoint": {"task": "audit.checkpoint", "schedule": AUDIT_CHECKPOINT_SECONDS},
    "audit-prune": {"task": "audit.prune", "schedule": AUDIT_PRUNE_SECONDS},
    "sweep-approvals": {"task": "governance.sweep_approvals", "schedule": 15.0},
    "sweep-nodes": {"task": "governance.sweep_nodes", "schedule": NODE_SWEEP_SECONDS},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

REST_FRAMEWORK = {
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}

# --- the gateway ---------------------------------------------------------------------------
# Largest JSON-RPC message accepted on /mcp and /mcp/ws; bigger ones get a JSON-RPC error.
MCP_MAX_MESSAGE_BYTES = env_int("MCP_MAX_MESSAGE_BYTES", 1024 * 1024, minimum=1024)
# Django reads a POST body only up to this; keep it above the JSON-RPC limit so ours speaks.
DATA_UPLOAD_MAX_MEMORY_SIZE = MCP_MAX_MESSAGE_BYTES + 1024 * 1024
# Frames above this are closed by the WebSocket transport itself (code 1009) before we see them.
WS_MAX_FRAME_BYTES = env_int("WS_MAX_FRAME_BYTES", 4 * MCP_MAX_MESSAGE_BYTES, minimum=1024)
# Per-call deadline for an upstream tool call.
MCP_CALL_TIMEOUT_SECONDS = env_float("MCP_CALL_TIMEOUT_SECONDS", 30.0, minimum=0.01)
# Tools per tools/list page.
MCP_PAGE_SIZE = env_int("MCP_PAGE_SIZE", 100, minimum=1)
# Server-to-client streams (list_changed): a stream ends after this and the client reconnects;
# a keep-alive comment goes out this often so proxies keep an idle stream open.
MCP_STREAM_MAX_SECONDS = env_float("MCP_STREAM_MAX_SECONDS", 600.0, minimum=1)
MCP_STREAM_KEEPALIVE_SECONDS = env_float("MCP_STREAM_KEEPALIVE_SECONDS", 15.0, minimum=0.1)
# Browser origins allowed to call /mcp (requests without Origin are non-browser and allowed).
MCP_ALLOWED_ORIGINS = env_list(
    "MCP_ALLOWED_ORIGINS", ["http://127.0.0.1", "http://localhost", "http://[::1]"]
)
# How often each gateway process re-reads the persisted governance version (tokens, grants,
# tool servers): the bound on how long a revocation or grant change takes to apply.
GOVERNANCE_POLL_SECONDS = env_float("GOVERNANCE_POLL_SECONDS", 0.25, minimum=0.01)
# Audit group commit: most records per transaction.
AUDIT_BATCH_MAX = env_int("AUDIT_BATCH_MAX", 500, minimum=1)
# Strings in recorded arguments are kept up to this many characters, then cut and marked.
AUDIT_MAX_STRING_CHARS = env_int("AUDIT_MAX_STRING_CHARS", 4096, minimum=64)
# The Ed25519 key that signs audit checkpoints: its 32-byte seed, base64. Every process of a
# deployment needs the same one. Empty: a key kept in DATA_DIR/audit-signing.key, made on
# first use (fine for one machine; `manage.py audit_public_key` prints its public half).
AUDIT_SIGNING_KEY = env_str("AUDIT_SIGNING_KEY", "")
# Public keys (base64) of former signing keys, so checkpoints they signed still verify.
AUDIT_TRUSTED_KEYS = env_list("AUDIT_TRUSTED_KEYS", [])
# Upstream reconnect backoff (seconds): first wait and ceiling.
UPSTREAM_BACKOFF_INITIAL = env_float("UPSTREAM_BACKOFF_INITIAL", 0.2, minimum=0.0)
UPSTREAM_BACKOFF_MAX = env_float("UPSTREAM_BACKOFF_MAX", 10.0, minimum=0.0)
# How often an idle upstream session is re-listed: its liveness check, and the watch for tools
# that change mid-session.
UPSTREAM_WATCH_SECONDS = env_float("UPSTREAM_WATCH_SECONDS", 5.0, minimum=0.1)
# Circuit breaker per upstream: this many calls in a row that time out or find it down open
# the breaker; calls then fail at once, until one trial call after UPSTREAM_BREAKER_RESET_SECONDS
# succeeds (closed again) or fails (open again).
UPSTREAM_BREAKER_FAILURES = env_int("UPSTREAM_BREAKER_FAILURES", 3, minimum=1)
UPSTREAM_BREAKER_RESET_SECONDS = env_float("UPSTREAM_BREAKER_RESET_SECONDS", 5.0, minimum=0.05)

# --- scale-out and restarts -----------------------------------------------------------------
# On SIGTERM a gateway stops listening, refuses new calls, and waits up to this long for the
# calls in flight to be answered before it closes its WebSockets (1012) and exits.
DRAIN_SECONDS = env_float("DRAIN_SECONDS", 10.0, minimum=0.0)
# Each gateway process writes a heartbeat this often (its node row); a node silent for
# NODE_LEASE_SECONDS is dead, and the calls it left unanswered are recorded as interrupted.
NODE_HEARTBEAT_SECONDS = env_float("NODE_HEARTBEAT_SECONDS", 2.0, minimum=0.05)
NODE_LEASE_SECONDS = env_float("NODE_LEASE_SECONDS", 30.0, minimum=0.1)

# --- approvals ------------------------------------------------------------------------------
# This gateway process's name, kept on the approval requests it holds. A process that starts
# again under the same name resolves the requests its former self left pending. Empty: the
# host name and the port `manage.py serve` listens on.
GATEWAY_NODE = env_str("GATEWAY_NODE", "")
# While a call waits for approval, a client that asked for progress hears from it this often:
# well inside common read timeouts (httpx's default is 5 s), so the wait keeps its stream alive.
APPROVAL_PROGRESS_SECONDS = env_float("APPROVAL_PROGRESS_SECONDS", 2.0, minimum=0.1)
# A holding gateway renews its requests' lease this often (a third of it); a request whose
# lease lapses (its gateway died) is resolved as interrupted by the beat sweep.
APPROVAL_LEASE_SECONDS = env_float("APPROVAL_LEASE_SECONDS", 30.0, minimum=1.0)

# --- dashboard -----------------------------------------------------------------------------
# How often a live dashboard stream looks for new audit records (one indexed read).
DASHBOARD_POLL_SECONDS = env_float("DASHBOARD_POLL_SECONDS", 1.0, minimum=0.05)
# Gateways write each connected or calling agent's last_seen_at this often; an agent seen
# within twice this is shown online.
AGENT_PRESENCE_SECONDS = env_float("AGENT_PRESENCE_SECONDS", 10.0, minimum=0.1)

# --- guardrails ----------------------------------------------------------------------------
# How often a call waiting on a blocking slow (Celery) check looks for its verdict.
SLOW_CHECK_POLL_SECONDS = env_float("SLOW_CHECK_POLL_SECONDS", 0.05, minimum=0.005)
# A slow check started this many times (its worker killed each time) gives up with an error.
SLOW_CHECK_MAX_ATTEMPTS = env_int("SLOW_CHECK_MAX_ATTEMPTS", 3, minimum=1)
# Modules that register more slow checks (a deployment's own; the tests add a slow one).
SLOW_CHECKS_EXTRA = env_list("SLOW_CHECKS_EXTRA", [])
# Load slow-check models as each Celery pool child starts (~4.5 s and ~0.4 GB per child)
# rather than on the first check, which would otherwise outlast a blocking check's timeout.
SLOW_CHECK_PRELOAD = env_bool("SLOW_CHECK_PRELOAD", False)

# Where `manage.py serve` (and so `make run`) listens.
HOST = env_str("HOST", "127.0.0.1")
PORT = env_int("PORT", 8000, minimum=0)

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
