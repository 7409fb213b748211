"""Typed settings read once from the environment, shared by the receiver, the workers and the tools."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kernel.broker_url import broker_url_problem

# Logins, signups, logouts, password changes, user deletions, and every code a built-in handler listens to
# (breached passwords, blocked accounts and IPs, refresh-token reuse). The rest (Management API calls,
# token exchanges, silent authentication, ...) is filtered: `*=auth0.other` routes it too.
DEFAULT_ROUTES = (
    "s,f,fp,fu,ss,fs,slo,flo,scp,fcp,sdu,"
    "pwd_leak,signup_pwd_leak,reset_pwd_leak,limit_wc,limit_mu,limit_sul,ferrt"
)

# RabbitMQ closes a channel whose delivery stays unacked for consumer_timeout (30 min by default), and a
# retry's countdown is held unacked in the worker, so every delay must stay well under that.
MAX_SAFE_COUNTDOWN_SECONDS = 20 * 60

CommaList = Annotated[tuple[str, ...], NoDecode]
#: The RabbitMQ queue types the service declares its queues with (kernel/topology.py).
QueueType = Literal["classic", "quorum"]

# Stream and API tokens are bearer secrets the operator makes up. 32 characters is the shortest common
# way to write 128 random bits (`openssl rand -hex 16`), the strength a guessable-online secret needs;
# `secrets.token_urlsafe(32)` (what scripts/run writes) gives 43.
MIN_TOKEN_LENGTH = 32
# The placeholders .env.example ships with ("change-me…"), refused in any case and wherever they appear.
PLACEHOLDER_MARKERS = ("change-me", "changeme")
MAKE_A_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"  # noqa: S105 - a command


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class Settings(BaseSettings):
    """Every environment variable the service reads; see .env.example for each one's meaning."""

    # Only the documented variable names are read: no bare field names such as MAX_RETRIES. Errors never
    # show the value they refused: it may be a secret, and start-up errors end up in logs.
    model_config = SettingsConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    broker_url: str = Field("amqp://guest:guest@localhost:5672//", validation_alias="BROKER_URL")
    # Every work queue, DLQ and the quarantine queue is declared with this type; an existing deployment
    # changes it with `auth0-events topology migrate` (RabbitMQ cannot redeclare a queue in place).
    queue_type: QueueType = Field("classic", validation_alias="AUTH0_EVENTS_QUEUE_TYPE")
    log_stream_tokens: CommaList = Field((), validation_alias="AUTH0_LOG_STREAM_TOKENS")
    allow_unauthenticated: bool = Field(False, validation_alias="AUTH0_EVENTS_ALLOW_UNAUTHENTICATED")
    routes: str = Field(DEFAULT_ROUTES, validation_alias="AUTH0_EVENTS_ROUTES")
    max_retries: int = Field(8, ge=0, le=100, validation_alias="AUTH0_EVENTS_MAX_RETRIES")
    retry_backoff_base: float = Field(
        2.0,
        gt=0,
        validation_alias="AUTH0_EVENTS_RETRY_BACKOFF_BASE",
    )
    retry_backoff_max: float = Field(
        300.0,
        gt=0,
        le=MAX_SAFE_COUNTDOWN_SECONDS,
        validation_alias="AUTH0_EVENTS_RETRY_BACKOFF_MAX",
    )
    max_body_bytes: int = Field(
        10 * 1024 * 1024,
        gt=0,
        validation_alias="AUTH0_EVENTS_MAX_BODY_BYTES",
    )
    plugins: CommaList = Field((), validation_alias="AUTH0_EVENTS_PLUGINS")
    builtin_handlers: CommaList = Field(("log",), validation_alias="AUTH0_EVENTS_BUILTIN_HANDLERS")
    publish_timeout: float = Field(10.0, gt=0, validation_alias="AUTH0_EVENTS_PUBLISH_TIMEOUT")
    retry_after_seconds: int = Field(30, ge=1, validation_alias="AUTH0_EVENTS_RETRY_AFTER")
    task_time_limit: int = Field(
        300,
        gt=0,
        le=MAX_SAFE_COUNTDOWN_SECONDS,
        validation_alias="AUTH0_EVENTS_TASK_TIME_LIMIT",
    )

    # threads (default): WORKER_CONCURRENCY events at once in threads of one process, their ledger writes
    # sharing commits (tasks/group_commit.py), faster than prefork (BENCHMARKS.md, "Workers"); a task past
    # the hard time limit ends the worker, which its supervisor restarts (tasks/time_limits.py). prefork:
    # one event at a time per pool process, each committing alone; the hard time limit kills only that
    # process. WORKER_CONCURRENCY 0 (unset) takes the pool's usual figure: 16 threads, or 2 processes.
    worker_pool: Literal["threads", "prefork"] = Field("threads", validation_alias="AUTH0_EVENTS_WORKER_POOL")
    worker_concurrency: int = Field(0, ge=0, le=256, validation_alias="WORKER_CONCURRENCY")

    database_url: str = Field("sqlite:///auth0-events.sqlite3", validation_alias="DATABASE_URL")
    api_tokens: CommaList = Field((), validation_alias="AUTH0_EVENTS_API_TOKENS")

    alert_webhook_url: str = Field("", validation_alias="AUTH0_EVENTS_ALERT_WEBHOOK_URL")
    alert_threshold: int = Field(5, ge=1, validation_alias="AUTH0_EVENTS_ALERT_THRESHOLD")
    alert_window_seconds: int = Field(300, ge=1, validation_alias="AUTH0_EVENTS_ALERT_WINDOW")
    alert_timeout: float = Field(10.0, gt=0, validation_alias="AUTH0_EVENTS_ALERT_TIMEOUT")

    auth0_domain: str = Field("", validation_alias="AUTH0_DOMAIN")
    auth0_client_id: str = Field("", validation_alias="AUTH0_CLIENT_ID")
    auth0_client_secret: str = Field("", validation_alias="AUTH0_CLIENT_SECRET")
    block_breached_users: bool = Field(False, validation_alias="AUTH0_EVENTS_BLOCK_BREACHED_USERS")
    signup_roles: CommaList = Field((), validation_alias="AUTH0_EVENTS_SIGNUP_ROLES")

    # The stream watch (`auth0-events stream watch`, README: Stream health watch).
    stream_id: str = Field("", validation_alias="AUTH0_EVENTS_STREAM_ID")
    watch_interval: float = Field(60.0, gt=0, le=86400, validation_alias="AUTH0_EVENTS_WATCH_INTERVAL")
    watch_grace: float = Field(300.0, ge=0, le=7 * 86400, validation_alias="AUTH0_EVENTS_WATCH_GRACE")
    watch_resume: bool = Field(False, validation_alias="AUTH0_EVENTS_WATCH_RESUME")
    watch_lease: float = Field(180.0, gt=0, le=86400, validation_alias="AUTH0_EVENTS_WATCH_LEASE")
    watch_rate: float = Field(2.0, gt=0, le=100, validation_alias="AUTH0_EVENTS_WATCH_RATE")
    watch_readyz_url: str = Field(
        "http://127.0.0.1:8000/readyz", validation_alias="AUTH0_EVENTS_WATCH_READYZ_URL"
    )

    # Set per worker node (each Procfile worker line sets its own); empty or unset: no metrics server.
    metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias="AUTH0_EVENTS_METRICS_PORT")

    log_format: Literal["auto", "json", "text"] = Field("auto", validation_alias="AUTH0_EVENTS_LOG_FORMAT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="AUTH0_EVENTS_LOG_LEVEL"
    )
    log_mask_pii: bool = Field(False, validation_alias="AUTH0_EVENTS_LOG_MASK_PII")
    # The secret of the masks' keyed hash: without one, a masked IPv4 address is found again by hashing
    # all 2**32 of them.
    log_mask_key: str = Field("", repr=False, validation_alias="AUTH0_EVENTS_LOG_MASK_KEY")

    _split_tokens = field_validator(
        "log_stream_tokens", "plugins", "builtin_handlers", "api_tokens", "signup_roles", mode="before"
    )(_split_commas)

    @field_validator("log_stream_tokens", "api_tokens")
    @classmethod
    def _tokens_are_real_secrets(cls, tokens: tuple[str, ...]) -> tuple[str, ...]:
        for number, token in enumerate(tokens, start=1):
            problem = token_problem(token)
            if problem:
                raise ValueError(
                    f"token {number} {problem}: use at least {MIN_TOKEN_LENGTH} random characters, "
                    f"e.g. from `{MAKE_A_TOKEN}`"
                )
        return tokens

    @field_validator("broker_url")
    @classmethod
    def _broker_url_lists_amqp_nodes(cls, url: str) -> str:
        # One node, or a cluster's nodes in kombu's failover form: amqp://…;amqp://…
        problem = broker_url_problem(url)
        if problem:
            raise ValueError(problem)
        return url

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_port_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _management_api_credentials_when_actions_enabled(self) -> Settings:
        if self.block_breached_users or self.signup_roles:
            missing = [
                name
                for name, value in (
                    ("AUTH0_DOMAIN", self.auth0_domain),
                    ("AUTH0_CLIENT_ID", self.auth0_client_id),
                    ("AUTH0_CLIENT_SECRET", self.auth0_client_secret),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    "the Auth0 Management API actions (AUTH0_EVENTS_BLOCK_BREACHED_USERS, "
                    f"AUTH0_EVENTS_SIGNUP_ROLES) need {', '.join(missing)}"
                )
        return self

    @model_validator(mode="after")
    def _mask_key_when_masking(self) -> Settings:
        if self.log_mask_pii:
            problem = "is not set" if not self.log_mask_key else token_problem(self.log_mask_key)
            if problem:
                raise ValueError(
                    f"AUTH0_EVENTS_LOG_MASK_KEY {problem}: AUTH0_EVENTS_LOG_MASK_PII needs a secret of "
                    f"at least {MIN_TOKEN_LENGTH} random characters for the masks' keyed hash, e.g. "
                    f"from `{MAKE_A_TOKEN}`"
                )
        return self

    @model_validator(mode="after")
    def _backoff_base_below_cap(self) -> Settings:
        if self.retry_backoff_base > self.retry_backoff_max:
            raise ValueError("AUTH0_EVENTS_RETRY_BACKOFF_BASE must not exceed AUTH0_EVENTS_RETRY_BACKOFF_MAX")
        return self


class ConfigurationError(Exception):
    """Raised at start-up when the environment holds a value the service cannot run with."""


# 16 threads: their shared commits carry more writes than 8 (SQLite +18 %, PostgreSQL +15 % on a quiet 2-core
# machine; 32 added nothing on SQLite, +14 % more on PostgreSQL): BENCHMARKS.md, "Workers".
DEFAULT_WORKER_CONCURRENCY = {"threads": 16, "prefork": 2}


def worker_concurrency(settings: Settings) -> int:
    """The events a worker runs at once: WORKER_CONCURRENCY, or its pool's usual figure when 0."""
    return settings.worker_concurrency or DEFAULT_WORKER_CONCURRENCY[settings.worker_pool]


def is_placeholder(secret: str) -> bool:
    """Whether ``secret`` is (or holds) one of the placeholders .env.example ships with."""
    return any(marker in secret.lower() for marker in PLACEHOLDER_MARKERS)


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a stream or API token (without repeating it), or None when it can."""
    if is_placeholder(token):
        return "is the placeholder of .env.example"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"has {len(token)} character{'s' if len(token) != 1 else ''}"
    return None


def check_flower_basic_auth(value: str) -> None:
    """Raise ConfigurationError unless FLOWER_BASIC_AUTH holds ``user:password`` logins with real passwords.

    Flower compares each comma-separated entry with the Basic credentials, so the user name ends at the
    first colon and the password is the rest. The message never repeats a password.
    """
    if not value.strip():
        raise ConfigurationError("FLOWER_BASIC_AUTH is not set: set it to user:password")
    for number, login in enumerate(value.split(","), start=1):
        user, colon, password = login.partition(":")
        problem = (
            "is not user:password"
            if not colon
            else "has an empty user name"
            if not user.strip()
            else "has an empty password"
            if not password
            else "has the placeholder password of .env.example"
            if is_placeholder(password)
            else None
        )
        if problem:
            raise ConfigurationError(
                f"FLOWER_BASIC_AUTH: login {number} {problem}: set user:password with a password of "
                f"your own (e.g. from `{MAKE_A_TOKEN}`)"
            )


def env_var_for(field_name: str) -> str:
    """Return the environment variable that sets ``field_name``, for error messages."""
    alias = Settings.model_fields[field_name].validation_alias
    return alias if isinstance(alias, str) else field_name.upper()


def _field_for(location: str) -> str | None:
    for name, info in Settings.model_fields.items():
        if location in (name, info.validation_alias):
            return name
    return None


def load_settings(**overrides: object) -> Settings:
    """Read the settings, raising ConfigurationError naming each offending environment variable.

    ``overrides`` take field names (``max_retries=3``) and win over the environment.
    """
    unknown = set(overrides) - set(Settings.model_fields)
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    try:
        return Settings(**{env_var_for(name): value for name, value in overrides.items()})  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = _field_for(str(error["loc"][0])) if error["loc"] else None
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{env_var_for(field)}: {message}" if field else message)
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment on first use."""
    return load_settings()
