"""gaitweb settings, driven by environment variables.

Every knob an operator may want to turn is read from the environment here, in one place
(docs/operations.md lists them). Nothing secret is a constant in the repository: when
SECRET_KEY is unset, a random key is generated once and kept under GAIT_DATA_DIR.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def env_list(name: str, default: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


DEMO = env_bool("GAIT_DEMO", False)
DATA_DIR = Path(os.environ.get("GAIT_DATA_DIR", BASE_DIR / "var")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    path = DATA_DIR / "secret_key"
    if not path.exists():
        # O_EXCL: two processes starting at once must not write two different keys.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "axes",
    "gaitweb",
    "jobs",
    "approvals",
    "packs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # before CSRF: their process_view runs before anything reads the body (gaitweb.lib.middleware)
    "gaitweb.lib.middleware.RequestSizeLimitMiddleware",
    "gaitweb.lib.middleware.NulCharacterMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # last, as django-axes asks: turns a lockout into its 429 page
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "gaitweb.urls"

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

WSGI_APPLICATION = "gaitweb.wsgi.application"
ASGI_APPLICATION = "gaitweb.asgi.application"

# --- Database -------------------------------------------------------------------------------
# SQLite is the embedded default (quick start); PostgreSQL via DATABASE_URL is production and CI.
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'gaitweb.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE: writers take the lock at BEGIN, so a read-then-write transaction never
        # fails half-way with "database is locked"; the busy timeout makes the others wait.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test_gaitweb.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Server-side binding, with statements prepared on a connection's 5th use of them: the
    # server parses and plans the API's hot statements once per connection instead of on every
    # request (a submit costs PostgreSQL ~30% less CPU; bench/api_bench.py). Behind a pooler
    # that cannot hold prepared statements (PgBouncer in transaction mode before 1.21) set
    # DB_PREPARE_THRESHOLD=off; DB_SERVER_SIDE_BINDING=false restores client-side binding.
    _threshold = os.environ.get("DB_PREPARE_THRESHOLD", "5").strip().lower()
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=env_bool("DB_SERVER_SIDE_BINDING", True),
        prepare_threshold=None if _threshold in ("", "off", "none") else int(_threshold),
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-axes first: it refuses a locked-out login before any password is checked
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every start when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# runserver and the tests serve files straight from the apps' static dirs
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
# Messages live in the session, never in a cookie: the admin shows a new API key once as a
# message, and a cookie would carry it to the browser (and any log of its headers) signed but
# readable.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# --- HTTPS deployments (docs/operations.md) -------------------------------------------------------
# GAIT_HTTPS=true is the one switch for a site served only over HTTPS: it turns on the redirect,
# secure cookies and a year of HSTS; each setting below can still be set on its own. With every
# one of them on, `manage.py check --deploy` is clean (tests/test_deploy.py).
HTTPS = env_bool("GAIT_HTTPS", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", HTTPS)
CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", HTTPS)
# Behind a TLS-terminating proxy: "HTTP_X_FORWARDED_PROTO,https" (header, value). Only set it
# when the proxy always sets or strips that header, or clients can claim to be on HTTPS.
_proxy_header = [
    part.strip()
    for part in os.environ.get("SECURE_PROXY_SSL_HEADER", "").split(",")
    if part.strip()
]
if _proxy_header:
    if len(_proxy_header) != 2:
        raise ValueError(
            "SECURE_PROXY_SSL_HEADER must be 'HEADER,value', e.g. HTTP_X_FORWARDED_PROTO,https"
        )
    SECURE_PROXY_SSL_HEADER = (_proxy_header[0], _proxy_header[1])

# --- Login throttling: django-axes (docs/security.md, "Deployment basics") ------------------------
# Failed logins on the dashboard and the admin are counted per (username, client address); at
# the limit that pair is locked out (429) for the cool-off time, even with the right password.
# An admin unlocks early with `manage.py axes_reset_username NAME` (or axes_reset) or by
# deleting the row under Axes -> Access attempts in the admin.
AXES_FAILURE_LIMIT = env_int("GAIT_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("GAIT_LOGIN_COOLOFF_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "gaitweb.views.login_locked_out"  # 429 login_throttled, Retry-After
# The client address is REMOTE_ADDR: behind a reverse proxy every client has the proxy's
# address, so the lockout is then per username (docs/security.md).

# --- Cache (throttling must hold across processes: use Redis when configured) ---------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "gaitweb_cache",
        }
    }

# --- django-q2 ------------------------------------------------------------------------------
# gaitweb owns attempts and backoff (docs/engine.md): django-q2 must never retry a task on its own.
# max_attempts=1 and ack_failures=True drop a failed task; retry > timeout keeps the broker from
# re-delivering a task that is still running.
Q_CLUSTER = {
    "name": "gaitweb",
    "orm": "default",
    "workers": env_int("GAIT_Q_WORKERS", 2),
    "timeout": env_int("GAIT_Q_TIMEOUT", 3600),
    "retry": env_int("GAIT_Q_TIMEOUT", 3600) + 600,
    "max_attempts": 1,
    "ack_failures": True,
    "poll": 0.2,
    "catch_up": False,
    "save_limit": 1000,
    "label": "Tasks",
    "bulk": 1,
    # django-q2 replaces a worker process after this many tasks (its default: 500). A gaitweb
    # worker's replacement opens two database connections (its own and the heartbeat's LISTEN)
    # and prepares its statements again, which at 500 cost short jobs ~10% of their throughput
    # (bench/engine_bench.py, ``throughput``). A worker whose peak memory passed max_rss is
    # replaced after its task whatever the count: the guard against step code that leaks.
    "recycle": env_int("GAIT_Q_RECYCLE", 5000),
    "max_rss": env_int("GAIT_Q_MAX_RSS_MB", 512) * 1024 or None,  # django-q2 takes kilobytes
    "compress": False,
    "sync": env_bool("GAIT_Q_SYNC", False),
    # the stock ORM broker plus a watchdog that keeps the engine's sweep chain alive (jobs.broker)
    "broker_class": "jobs.broker.ClusterORM",
}

# --- gaitweb --------------------------------------------------------------------------------
GAIT = {
    "JOBS_ENABLED": env_bool("GAIT_JOBS_ENABLED", True),
    "LEASE_SECONDS": env_float("GAIT_LEASE_SECONDS", 10.0),
    "HEARTBEAT_SECONDS": env_float("GAIT_HEARTBEAT_SECONDS", 1.0),
    "SLICE_SECONDS": env_float("GAIT_SLICE_SECONDS", 30.0),
    # group commit of a workflow's idempotent calls (jobs.durable): 0 writes each call alone
    "WORKFLOW_FLUSH_SECONDS": env_float("GAIT_WORKFLOW_FLUSH_SECONDS", 0.02),
    "SWEEP_SECONDS": env_float("GAIT_SWEEP_SECONDS", 2.0),
    "RECURRING_TICK_SECONDS": env_float("GAIT_RECURRING_TICK_SECONDS", 5.0),
    "RECURRING_GRACE_SECONDS": env_float("GAIT_RECURRING_GRACE_SECONDS", 60.0),
    # while a step runs, how often the engine's heartbeat looks for a stop/cancel (jobs.engine)
    "STOP_POLL_SECONDS": env_float("GAIT_STOP_POLL_SECONDS", 0.2),
    # how often a running command's output tails are saved on its StepRun (the heartbeat)
    "LIVE_OUTPUT_SECONDS": env_float("GAIT_LIVE_OUTPUT_SECONDS", 1.0),
    # PostgreSQL: wake-ups and stops are pushed with LISTEN/NOTIFY (jobs/wake.py); the polls stay
    # as the fallback. Off behind a pooler in transaction mode, which cannot hold a LISTEN.
    "PG_NOTIFY": env_bool("GAIT_PG_NOTIFY", True),
    # demo mode (`make run` / `manage.py up` turn it on): the demo's python step functions
    # (jobs.stepfns) are registered and command steps default to on, with the demo's own
    # allow-list (`echo`); off in a deployment
    "DEMO": DEMO,
    # modules that register python step functions (@step_function, jobs.steps) and workflows
    # (@workflow, jobs.durable); demo mode adds the demo's and examples/refund_agent.py
    "STEP_MODULES": list(
        dict.fromkeys(
            [
                *(["jobs.stepfns", "examples.refund_agent"] if DEMO else []),
                *env_list("GAIT_STEP_MODULES", ""),
            ]
        )
    ),
    # steps that touch the machine are opt-in (docs/security.md): command steps at all, then
    # only executables on the admin's allow-list (jobs.models.AllowedExecutable); shell: true
    # needs its own switch
    "COMMAND_STEPS": env_bool("GAIT_COMMAND_STEPS", DEMO),
    "COMMAND_SHELL": env_bool("GAIT_COMMAND_SHELL", False),
    # a command's environment is an allow-list: this PATH, the worker's values of the names in
    # COMMAND_ENV_PASSTHROUGH, the GAIT_* step variables and the spec's env (jobs.steps)
    "COMMAND_PATH": os.environ.get("GAIT_COMMAND_PATH", "/usr/local/bin:/usr/bin:/bin"),
    "COMMAND_ENV_PASSTHROUGH": env_list("GAIT_COMMAND_ENV_PASSTHROUGH", "LANG,LC_ALL,LC_CTYPE,TZ"),
    # processes of a deployment with command steps clear their "dumpable" flag, so a command
    # (same user) cannot read their /proc/<pid>/environ (jobs.hardening)
    "PROCESS_UNDUMPABLE": env_bool("GAIT_PROCESS_UNDUMPABLE", True),
    # how long submit may use its per-process copy of the allow-lists (jobs.allowlists)
    "ALLOWLIST_CACHE_SECONDS": env_float("GAIT_ALLOWLIST_CACHE_SECONDS", 5.0),
    # http steps: redirects followed (each hop checked), and the largest response body read
    "HTTP_MAX_REDIRECTS": env_int("GAIT_HTTP_MAX_REDIRECTS", 5),
    "HTTP_RESPONSE_MAX_BYTES": env_int("GAIT_HTTP_RESPONSE_MAX_BYTES", 1024 * 1024),
    # the longest deadline, sleep, wait_event timeout, approval expiry or retry interval a spec
    # may ask for, in seconds (step timeouts have their own STEP_TIMEOUT_MAX)
    "SPEC_DURATION_MAX": env_float("GAIT_SPEC_DURATION_MAX", 366 * 86400.0),
    "LIST_DEFAULT_PAGE_SIZE": env_int("GAIT_LIST_DEFAULT_PAGE_SIZE", 50),
    "LIST_MAX_PAGE_SIZE": env_int("GAIT_LIST_MAX_PAGE_SIZE", 500),
    "STEP_TIMEOUT_DEFAULT": env_float("GAIT_STEP_TIMEOUT_DEFAULT", 300.0),
    "STEP_TIMEOUT_MAX": env_float("GAIT_STEP_TIMEOUT_MAX", 86400.0),
    "SPEC_MAX_BYTES": env_int("GAIT_SPEC_MAX_BYTES", 256 * 1024),
    # request bodies, refused by Content-Length before they are read (gaitweb.lib.middleware):
    # every endpoint, and the pack uploads (verify, inspect; diff takes two)
    "REQUEST_MAX_BYTES": env_int("GAIT_REQUEST_MAX_BYTES", 4 * 1024 * 1024),
    "UPLOAD_MAX_BYTES": env_int("GAIT_UPLOAD_MAX_BYTES", 256 * 1024 * 1024),
    "STEP_OUTPUT_MAX_BYTES": env_int("GAIT_STEP_OUTPUT_MAX_BYTES", 64 * 1024),
    "LOG_TAIL_MAX_BYTES": env_int("GAIT_LOG_TAIL_MAX_BYTES", 16 * 1024),
    "ENV_FINGERPRINT": os.environ.get("GAIT_ENV_FINGERPRINT", ""),
    # the stored policy (by name) bound to jobs of identities an admin gave no policy of their
    # own (approvals.identities; docs/security.md); empty: those jobs run ungated
    "DEFAULT_POLICY": os.environ.get("GAIT_DEFAULT_POLICY", "").strip(),
    "SIGNING_KEY_ENV": "GAIT_SIGNING_KEY",
    "KEYS_DIR": DATA_DIR / "keys",
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # --- REST API (gaitweb/api.py, docs/api.md) ---
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "gaitweb.api.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",  # enforces CSRF
    ],
    "DEFAULT_PERMISSION_CLASSES": ["gaitweb.api.ScopePermission"],
    "DEFAULT_THROTTLE_CLASSES": ["gaitweb.api.ApiRateThrottle"],
    # per API key / logged-in user / client address, counted in the shared cache
    "DEFAULT_THROTTLE_RATES": {
        "apikey": os.environ.get("GAIT_API_RATE_APIKEY", "6000/min"),
        "user": os.environ.get("GAIT_API_RATE_USER", "1200/min"),
        "anon": os.environ.get("GAIT_API_RATE_ANON", "120/min"),
    },
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["gaitweb.api.BoundedJSONParser"],
    "EXCEPTION_HANDLER": "gaitweb.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "gaitweb API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # a job's status appears in several components (JobOut, JobDecisionOut): one named enum
    "ENUM_NAME_OVERRIDES": {"JobStatusEnum": "jobs.models.JobStatus"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {
        "gaitweb": {"level": os.environ.get("GAIT_LOG_LEVEL", "INFO")},
        "django_q": {"level": os.environ.get("Q_LOG_LEVEL", "WARNING")},
    },
}
