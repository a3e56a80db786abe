"""Settings for the Shoptet addon platform: one module, every difference comes from the environment."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

from config import embedded_broker
from webhooks.events import KNOWN_EVENTS, SYSTEM_EVENTS

# Lets admin classes be written with their model as a type parameter.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# ---------------------------------------------------------------------------
# Shoptet credentials first: without them the platform runs in demo mode,
# which turns DEBUG on (INTERFACE.md, `make run`).
# ---------------------------------------------------------------------------
SHOPTET_CLIENT_ID: str = env.str("SHOPTET_CLIENT_ID", default="")
SHOPTET_CLIENT_SECRET: str = env.str("SHOPTET_CLIENT_SECRET", default="")
SHOPTET_PARTNER_URL: str = env.str("SHOPTET_PARTNER_URL", default="").rstrip("/")
SHOPTET_API_URL: str = env.str("SHOPTET_API_URL", default="https://api.myshoptet.com").rstrip("/")

SHOPTET_CREDENTIALS_SET = bool(SHOPTET_CLIENT_ID and SHOPTET_CLIENT_SECRET and SHOPTET_PARTNER_URL)

# ---------------------------------------------------------------------------
# Django basics
# ---------------------------------------------------------------------------
DEBUG: bool = env.bool("DEBUG", default=not SHOPTET_CREDENTIALS_SET)
PORT: int = env.int("PORT", default=8000)
PUBLIC_URL: str = env.str("PUBLIC_URL", default=f"http://127.0.0.1:{PORT}").rstrip("/")
# `make run` (scripts/run.py) writes the running platform's and fake Shoptet's URLs here while it runs, so a
# command from another terminal finds them without the same PORT.
RUN_STATE_FILE = BASE_DIR / "var" / "run.json"


def _required(name: str, value: str) -> str:
    """Stop the start when a production secret is missing instead of running with a guessable default."""
    if not value:
        raise ImproperlyConfigured(
            f"{name} is not set. Set it in the environment or in .env (see .env.example); "
            "only DEBUG mode runs without it."
        )
    return value


SECRET_KEY: str = env.str("SECRET_KEY", default="")
if DEBUG and not SECRET_KEY:
    # DEBUG only; never a production secret.
    SECRET_KEY = "dev-only-insecure-secret-key-change-me-0123456789-abcdefghijklmnop"  # noqa: S105  # nosec B105
_required("SECRET_KEY", SECRET_KEY)

ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG else []
)

# ---------------------------------------------------------------------------
# Secrets at rest
# ---------------------------------------------------------------------------


def _debug_encryption_key(secret_key: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(("token-encryption:" + secret_key).encode()).digest()).decode()


TOKEN_ENCRYPTION_KEYS: list[str] = env.list("TOKEN_ENCRYPTION_KEYS", default=[])
if DEBUG and not TOKEN_ENCRYPTION_KEYS:
    TOKEN_ENCRYPTION_KEYS = [_debug_encryption_key(SECRET_KEY)]
if not TOKEN_ENCRYPTION_KEYS:
    _required("TOKEN_ENCRYPTION_KEYS", "")

if not DEBUG:
    _required("SHOPTET_CLIENT_ID", SHOPTET_CLIENT_ID)
    _required("SHOPTET_CLIENT_SECRET", SHOPTET_CLIENT_SECRET)
    _required("SHOPTET_PARTNER_URL", SHOPTET_PARTNER_URL)

# ---------------------------------------------------------------------------
# Webhooks registered for every installation
# ---------------------------------------------------------------------------
DEFAULT_WEBHOOK_EVENTS = [
    "order:create",
    "order:update",
    "order:delete",
    "invoice:create",
    "invoice:update",
    "invoice:delete",
    "eshop:projectDomain",
]
# Shoptet answers 409 when one installation registers both events of these pairs.
CONFLICTING_WEBHOOK_EVENTS = [
    ("order:update", "order:cancel"),
    ("customer:update", "customer:disableOrders"),
    ("customer:update", "customer:enableOrders"),
]
_events = env.list("SHOPTET_WEBHOOK_EVENTS", default=DEFAULT_WEBHOOK_EVENTS)
SHOPTET_WEBHOOK_EVENTS: list[str] = sorted({event.strip() for event in _events if event.strip()} | {"job:finished"})
_unknown_events = sorted(set(SHOPTET_WEBHOOK_EVENTS) - KNOWN_EVENTS - SYSTEM_EVENTS)
if _unknown_events:
    raise ImproperlyConfigured(
        f"SHOPTET_WEBHOOK_EVENTS holds events Shoptet does not know: {', '.join(_unknown_events)}"
    )
if set(SHOPTET_WEBHOOK_EVENTS) & SYSTEM_EVENTS:
    raise ImproperlyConfigured(
        "SHOPTET_WEBHOOK_EVENTS cannot hold addon:* events: their URL is set in the partner administration."
    )
for _first, _second in CONFLICTING_WEBHOOK_EVENTS:
    if _first in SHOPTET_WEBHOOK_EVENTS and _second in SHOPTET_WEBHOOK_EVENTS:
        raise ImproperlyConfigured(
            f"SHOPTET_WEBHOOK_EVENTS holds both {_first} and {_second}; Shoptet refuses that pair (409). Keep one."
        )

# Webhook intake. Shoptet's bodies are a few hundred bytes; mass events carry a list of codes.
WEBHOOK_MAX_BODY_BYTES = 256 * 1024
# The signed eventCreated must fall in this window (Shoptet retries for 30 minutes; older is a replay).
WEBHOOK_REPLAY_WINDOW_PAST = timedelta(hours=6)
WEBHOOK_REPLAY_WINDOW_FUTURE = timedelta(minutes=5)
# After a signature key renewal the previous key is still accepted this long.
WEBHOOK_SIGNATURE_GRACE = timedelta(minutes=15)
# Raw bodies of settled deliveries are dropped after this; their metadata stays.
WEBHOOK_PAYLOAD_RETENTION = timedelta(days=30)
# Anyone can post: a rejected or ignored delivery keeps only this much of its body (plus its length and SHA-256).
WEBHOOK_REJECTED_BODY_PREFIX = 4 * 1024
# Rejected deliveries are deleted, and ignored ones lose their body, after this.
_rejected_retention_hours = env.int("REJECTED_DELIVERY_RETENTION_HOURS", default=24)
if _rejected_retention_hours < 1:
    raise ImproperlyConfigured("REJECTED_DELIVERY_RETENTION_HOURS must be at least 1.")
REJECTED_DELIVERY_RETENTION = timedelta(hours=_rejected_retention_hours)
# Days an uninstalled or terminated e-shop's mirrored data is kept before it is deleted; 0 keeps it for ever.
_tenant_retention_days = env.int("TENANT_DATA_RETENTION", default=30)
if _tenant_retention_days < 0:
    raise ImproperlyConfigured("TENANT_DATA_RETENTION must be a number of days, 0 or more.")
TENANT_DATA_RETENTION: timedelta | None = timedelta(days=_tenant_retention_days) if _tenant_retention_days else None
# Rows deleted per statement when an e-shop's data is purged: no statement holds locks for long.
TENANT_DATA_PURGE_BATCH = 1000
# How long the settings page's link to download the e-shop's data stays valid.
EXPORT_LINK_MAX_AGE = timedelta(hours=1)
# Rejections stored per source address and minute; beyond it the endpoint answers 429 and stores nothing. 0: off.
WEBHOOK_REJECTIONS_PER_MINUTE: int = env.int("WEBHOOK_REJECTIONS_PER_MINUTE", default=30)
# Proxies in front of the platform that append the caller to X-Forwarded-For; 0 trusts no such header.
TRUSTED_PROXY_COUNT: int = env.int("TRUSTED_PROXY_COUNT", default=0)

# Order and invoice sync. A new installation imports every order and invoice once onboarded.
SYNC_INITIAL_IMPORT = True
# Sections requested with every order (detail and snapshot alike, so both give the same object).
SYNC_ORDER_INCLUDE = ("notes", "shippingDetails")

# Shoptet's install window is 5 s; the code exchange gets at most 3 s of it.
SHOPTET_INSTALL_EXCHANGE_TIMEOUT = 3.0
# Install callbacks admitted per window (seconds) from one source address and from everybody together;
# each one may cost a code exchange with our client secret. More get 429 with Retry-After.
INSTALL_CALLBACK_THROTTLE_PER_ADDRESS: int = env.int("INSTALL_CALLBACK_THROTTLE_PER_ADDRESS", default=50)
INSTALL_CALLBACK_THROTTLE_GLOBAL: int = env.int("INSTALL_CALLBACK_THROTTLE_GLOBAL", default=300)
INSTALL_CALLBACK_THROTTLE_WINDOW: int = env.int("INSTALL_CALLBACK_THROTTLE_WINDOW", default=60)
SHOPTET_API_TIMEOUT = 20.0
SHOPTET_CONTENT_TYPE = "application/json"
SHOPTET_TOKEN_CONCURRENCY = 3

# ---------------------------------------------------------------------------
# Applications
# ---------------------------------------------------------------------------
INSTALLED_APPS = [
    # Django's admin with the platform's site: the dashboard at its index, the audit log (config/admin.py).
    "config.apps.PlatformAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # Swagger UI's files served from our own static files: production machines reach no CDN.
    "drf_spectacular_sidecar",
    "axes",
    "installations",
    "addon.apps.AddonConfig",
    "shoptet_api",
    "webhooks",
    "sync",
    "notifications",
    "rollups",
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
    # Last, as django-axes requires: it answers locked-out logins before the admin sees them.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

# ---------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one SQLite file in embedded mode; wait for the write lock.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
else:
    DATABASES["default"]["CONN_MAX_AGE"] = 60
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---------------------------------------------------------------------------
# Redis: broker, cache, cross-worker locks. Unset means embedded mode.
# ---------------------------------------------------------------------------
REDIS_URL: str = env.str("REDIS_URL", default="")
REDIS_SOCKET_TIMEOUT = 5.0

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "platform",
            "OPTIONS": {
                "socket_timeout": REDIS_SOCKET_TIMEOUT,
                "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
            },
        }
    }
else:
    # Embedded mode: the database is the one store every process shares.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "platform_cache",
        }
    }

# ---------------------------------------------------------------------------
# Celery
# ---------------------------------------------------------------------------
EMBEDDED_BROKER_DIR = BASE_DIR / "var" / "broker"
# The longest task (a snapshot import) is limited to an hour; Redis redelivers an unacknowledged task
# after the visibility timeout, so it must be longer or a running task would be started twice.
CELERY_TASK_TIME_LIMIT = 60 * 60
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 60
CELERY_VISIBILITY_TIMEOUT = CELERY_TASK_TIME_LIMIT + 30 * 60

CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object]
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
else:
    # Message files under var/broker, written and taken by atomic renames (config/embedded_broker.py).
    CELERY_BROKER_URL = embedded_broker.URL
    CELERY_BROKER_TRANSPORT = embedded_broker.TRANSPORT
    CELERY_BROKER_TRANSPORT_OPTIONS = embedded_broker.transport_options(EMBEDDED_BROKER_DIR)
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_SOCKET_TIMEOUT
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = "default"
# Celery closes Django's database connections around every task unless told to reuse them; a new
# PostgreSQL connection per task made webhook processing three times slower. A reused connection is
# closed after this many tasks, so one broken by a database restart is gone soon after.
CELERY_DB_REUSE_MAX = 100
# Every task's queue is named here (Celery deprecates the per-task `queue` attribute). Three queues:
# `imports` for long snapshot imports, on their own workers, so that one e-shop's big import never delays
# another e-shop's webhooks; `shoptet` for everything that calls Shoptet; `default` for relays and
# housekeeping; and `priority` (onboarding, batches of life-cycle events and job:finished), which the Shoptet
# workers read too, so that none of these waits behind another e-shop's bulk refreshes.
# docker-compose.yml runs one worker per kind; the README's "Operations" section explains it.
CELERY_TASK_ROUTES = {
    "installations.tasks.onboard": {"queue": "priority"},
    "installations.tasks.relay_pending_onboarding": {"queue": "default"},
    "installations.tasks.purge_ended_tenants": {"queue": "default"},
    "webhooks.tasks.process_delivery": {"queue": "shoptet"},
    # Bulk batches; a batch of priority events is sent to `priority` by the relay.
    "webhooks.tasks.process_batch": {"queue": "shoptet"},
    "webhooks.tasks.reconcile_webhooks": {"queue": "shoptet"},
    "webhooks.tasks.recover_notifications": {"queue": "shoptet"},
    "webhooks.tasks.relay_deliveries": {"queue": "default"},
    "webhooks.tasks.watch_registrations": {"queue": "default"},
    "webhooks.tasks.watch_notifications": {"queue": "default"},
    "webhooks.tasks.purge_payloads": {"queue": "default"},
    "sync.tasks.import_snapshot": {"queue": "imports"},
    "sync.tasks.start_snapshot": {"queue": "shoptet"},
    "sync.tasks.poll_snapshot": {"queue": "shoptet"},
    "sync.tasks.sync_changes": {"queue": "shoptet"},
    "sync.tasks.refresh_documents": {"queue": "shoptet"},
    "sync.tasks.relay_sync_work": {"queue": "default"},
    "sync.tasks.sync_changes_everywhere": {"queue": "default"},
    "sync.tasks.request_changes": {"queue": "default"},
    "config.sweeps.send_chunk": {"queue": "default"},
    "notifications.tasks.send_notification": {"queue": "default"},
    "notifications.tasks.relay_notifications": {"queue": "default"},
    "notifications.tasks.notify_silent_webhooks": {"queue": "default"},
    "rollups.tasks.roll_up": {"queue": "default"},
}
# Publishing must never hang a request: a broker that does not answer fails fast, and the
# outbox relays in beat pick the work up later.
CELERY_TASK_PUBLISH_RETRY = False
# Beat's periodic tasks log a line each when sent, received and finished; off unless asked for (or `-l debug`).
LOG_PERIODIC_TASKS: bool = env.bool("LOG_PERIODIC_TASKS", default=False)
# Sweeps over every installation: each visits every installation once per period, a slice per tick.
SWEEP_TICK = timedelta(minutes=1)
# Fewer installations than this per tick: the sweep takes them in fewer, larger slices (config.sweeps).
SWEEP_MIN_BATCH = 100
REGISTRATION_WATCH_PERIOD = timedelta(hours=1)
NOTIFICATION_WATCH_PERIOD = timedelta(minutes=15)
CHANGES_SWEEP_PERIOD = timedelta(hours=1)
CELERY_BEAT_SCHEDULE = {
    # Daily: the data of e-shops that ended more than TENANT_DATA_RETENTION ago.
    "purge-ended-tenants": {
        "task": "installations.tasks.purge_ended_tenants",
        "schedule": 24 * 60.0 * 60,
    },
    # The install callback only writes the database; this relay enqueues the onboarding.
    "relay-pending-onboarding": {
        "task": "installations.tasks.relay_pending_onboarding",
        "schedule": 3.0,
    },
    # The webhook endpoint only writes the database; this relay enqueues the processing.
    "relay-webhook-deliveries": {
        "task": "webhooks.tasks.relay_deliveries",
        "schedule": 2.0,
    },
    # The sweeps over every installation tick every SWEEP_TICK, each tick taking one slice (config.sweeps).
    "watch-webhook-registrations": {
        "task": "webhooks.tasks.watch_registrations",
        "schedule": SWEEP_TICK.total_seconds(),
    },
    "watch-webhook-notifications": {
        "task": "webhooks.tasks.watch_notifications",
        "schedule": SWEEP_TICK.total_seconds(),
    },
    # Hourly: rejected deliveries are kept only REJECTED_DELIVERY_RETENTION.
    "purge-webhook-payloads": {
        "task": "webhooks.tasks.purge_payloads",
        "schedule": 60.0 * 60,
    },
    # Polls snapshot jobs whose job:finished did not come, and re-enqueues sync work whose task was lost;
    # every 10 s, so that a dead worker's job (its lease lapses after 20 s) runs again within 30 s, and a
    # refresh run lost with a killed worker is taken up again within a minute.
    "relay-sync-work": {
        "task": "sync.tasks.relay_sync_work",
        "schedule": 10.0,
    },
    # The safety net under the webhooks: every installation's /changes since its cursor.
    "sync-changes": {
        "task": "sync.tasks.sync_changes_everywhere",
        "schedule": SWEEP_TICK.total_seconds(),
    },
    # Notification e-mails are recorded where their event happens; this relay enqueues the sending.
    "relay-notifications": {
        "task": "notifications.tasks.relay_notifications",
        "schedule": 10.0,
    },
    "notify-silent-webhooks": {
        "task": "notifications.tasks.notify_silent_webhooks",
        "schedule": 24 * 60.0 * 60,
    },
    # The dashboard's hourly statistics, from the rows new since the last run.
    "roll-up-statistics": {
        "task": "rollups.tasks.roll_up",
        "schedule": 60.0,
    },
}

# ---------------------------------------------------------------------------
# E-mail: notifications to e-shop admins (notifications app)
# ---------------------------------------------------------------------------
# smtp://user:password@host:587/?tls=True, smtp+ssl://…:465; unset writes mails to the console (demo mode).
_email = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND: str = _email["EMAIL_BACKEND"]
EMAIL_HOST: str = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT: int = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER: str = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD: str = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS: bool = bool(_email.get("EMAIL_USE_TLS", False))
EMAIL_USE_SSL: bool = bool(_email.get("EMAIL_USE_SSL", False))
# A server that hangs must not hold a worker: the send fails and is retried later.
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL: str = env.str("DEFAULT_FROM_EMAIL", default="Shoptet addon platform <noreply@localhost>")

# ---------------------------------------------------------------------------
# REST API
# ---------------------------------------------------------------------------
# Only dotted paths here: DRF reads this dict once, at its first import, so settings never import it.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["config.rest.TokenAuthentication"],
    # Staff with the model's Django permission, as in the admin: view to read, change to act.
    "DEFAULT_PERMISSION_CLASSES": ["config.rest.ModelPermissions"],
    # JSON only: every body the API takes is JSON, and a form or multipart parser is more surface to attack.
    "DEFAULT_PARSER_CLASSES": ["config.rest.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "config.rest.Pagination",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "config.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.rest.exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Per staff user, counted in the shared cache: generous for scripts, a stop for a runaway loop.
    # It fails open while the cache is down: reads that need only PostgreSQL keep answering.
    "DEFAULT_THROTTLE_CLASSES": ["config.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"user": "1200/minute"},
}
# The OpenAPI schema at /api/v1/schema/ and its Swagger UI at /api/v1/schema/ui/, for staff only.
SPECTACULAR_SETTINGS = {
    "TITLE": "Shoptet addon platform API",
    "DESCRIPTION": (
        "REST API v1 for partner staff. Authenticate with `Authorization: Token <key>` "
        "(`python manage.py drf_create_token <username>`, a staff user). Every error answers "
        '`{"error": <code>, "message": <text>, "details": <field errors or null>}`.'
    ),
    "VERSION": "1.0.0",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    # Token for tools, the admin's session for a browser opening the UI.
    "SERVE_AUTHENTICATION": [
        "config.rest.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "InstallationStatusEnum": "installations.models.Installation.Status",
        "DeliveryStatusEnum": "webhooks.models.WebhookDelivery.Status",
        "JobStatusEnum": "sync.models.SyncJob.Status",
    },
}

# ---------------------------------------------------------------------------
# Security
# ---------------------------------------------------------------------------
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = 0 if DEBUG else 60 * 60 * 24 * 365
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = [PUBLIC_URL] if PUBLIC_URL.startswith("https://") else []
# TLS is terminated at the load balancer, which redirects to HTTPS (README, deployment).
SILENCED_SYSTEM_CHECKS = ["security.W008"]

# Staff logins lock out after repeated failures (django-axes), per user name and address.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=30)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_IPWARE_PROXY_COUNT = 0

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# ---------------------------------------------------------------------------
# Internationalisation, static files
# ---------------------------------------------------------------------------
LANGUAGE_CODE = "en"
# The addon settings page speaks the languages of Shoptet's administration (`#LANGUAGE#`).
LANGUAGES = [("en", "English"), ("cs", "Čeština"), ("sk", "Slovenčina"), ("hu", "Magyar")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# ---------------------------------------------------------------------------
# Logging: one line per record; the e-shop id rides along where a record concerns one.
# ---------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "eshop": {"()": "config.logs.EshopContextFilter"},
        # On every handler: session tokens, OAuth codes and states never reach a log line (config/logs.py).
        "mask": {"()": "config.logs.CredentialMaskFilter"},
    },
    "formatters": {
        "json": {"()": "config.logs.JsonLineFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["eshop", "mask"]},
    },
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        # urllib3 logs full URLs at DEBUG; result URLs are secrets, so keep it quiet.
        "urllib3": {"level": "WARNING"},
        # Its start-up banner repeats on every management command.
        "axes.apps": {"level": "WARNING"},
        # Django's own handlers (a plain console in DEBUG, the admins' e-mail) would write requests and their
        # URLs unmasked; its records go through ours instead.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
