"""Unit tests for kernel.settings: environment variables, defaults, and errors that name the variable."""

from __future__ import annotations

import os
import re

import pytest
from pydantic import AliasChoices

from kernel.settings import (
    DEFAULT_ROUTES,
    MAX_SAFE_COUNTDOWN_SECONDS,
    MIN_TOKEN_LENGTH,
    ConfigurationError,
    Settings,
    check_flower_basic_auth,
    env_var_for,
    load_settings,
    worker_concurrency,
)
from tests.helpers import ROOT

TOKEN_A = "a" * MIN_TOKEN_LENGTH
TOKEN_B = "0123456789abcdef" * 3


def _names_settings_read() -> set[str]:
    names = set()
    for name, info in Settings.model_fields.items():
        names.add(name)
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
    return {name.lower() for name in names}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every variable Settings could read (any case), so each test sees only what it sets."""
    readable = _names_settings_read()
    for key in list(os.environ):
        if key.lower() in readable:
            monkeypatch.delenv(key)


def test_defaults() -> None:
    """With no variables set, every setting has its documented default."""
    settings = load_settings()
    assert settings.broker_url == "amqp://guest:guest@localhost:5672//"
    assert settings.log_stream_tokens == ()
    assert settings.allow_unauthenticated is False
    assert settings.routes == DEFAULT_ROUTES
    assert settings.max_retries == 8
    assert settings.retry_backoff_base == 2.0
    assert settings.retry_backoff_max == 300.0
    assert settings.max_body_bytes == 10 * 1024 * 1024
    assert settings.plugins == ()
    assert settings.builtin_handlers == ("log",)
    assert settings.publish_timeout == 10.0
    assert settings.retry_after_seconds == 30
    assert settings.task_time_limit == 300


def test_every_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each documented environment variable sets its field."""
    values = {
        "BROKER_URL": "amqp://u:p@rabbit:5672/vh",
        "AUTH0_LOG_STREAM_TOKENS": TOKEN_A,
        "AUTH0_EVENTS_ALLOW_UNAUTHENTICATED": "true",
        "AUTH0_EVENTS_ROUTES": "s,f",
        "AUTH0_EVENTS_MAX_RETRIES": "3",
        "AUTH0_EVENTS_RETRY_BACKOFF_BASE": "0.5",
        "AUTH0_EVENTS_RETRY_BACKOFF_MAX": "1200",
        "AUTH0_EVENTS_MAX_BODY_BYTES": "1024",
        "AUTH0_EVENTS_PLUGINS": "my.handlers",
        "AUTH0_EVENTS_BUILTIN_HANDLERS": "log",
        "AUTH0_EVENTS_PUBLISH_TIMEOUT": "2.5",
        "AUTH0_EVENTS_RETRY_AFTER": "60",
        "AUTH0_EVENTS_TASK_TIME_LIMIT": "900",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.broker_url == "amqp://u:p@rabbit:5672/vh"
    assert settings.log_stream_tokens == (TOKEN_A,)
    assert settings.allow_unauthenticated is True
    assert settings.routes == "s,f"
    assert settings.max_retries == 3
    assert settings.retry_backoff_base == 0.5
    assert settings.retry_backoff_max == 1200.0
    assert settings.max_body_bytes == 1024
    assert settings.plugins == ("my.handlers",)
    assert settings.builtin_handlers == ("log",)
    assert settings.publish_timeout == 2.5
    assert settings.retry_after_seconds == 60
    assert settings.task_time_limit == 900


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("one", ("one",)),
        ("one,two", ("one", "two")),
        (" one , two ,three ", ("one", "two", "three")),
        ("one,,two,", ("one", "two")),
        (" , ", ()),
        ("", ()),
        ('["a","b"]', ('["a"', '"b"]')),
    ],
    ids=["single", "pair", "spaces", "empty-items", "only-separators", "empty", "json-is-not-decoded"],
)
@pytest.mark.parametrize("variable", ["AUTH0_EVENTS_PLUGINS", "AUTH0_EVENTS_BUILTIN_HANDLERS"])
def test_comma_lists(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: tuple[str, ...]
) -> None:
    """Comma-separated variables are split, stripped, and empty items dropped; JSON is not decoded."""
    monkeypatch.setenv(variable, value)
    settings = load_settings()
    field = {
        "AUTH0_EVENTS_PLUGINS": "plugins",
        "AUTH0_EVENTS_BUILTIN_HANDLERS": "builtin_handlers",
    }[variable]
    assert getattr(settings, field) == expected


def test_overrides_by_field_name_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings(field=value) wins over the variable, and lists may be given as tuples."""
    monkeypatch.setenv("AUTH0_EVENTS_MAX_RETRIES", "3")
    settings = load_settings(max_retries=5, log_stream_tokens=(TOKEN_A, TOKEN_B), plugins="x, y")
    assert settings.max_retries == 5
    assert settings.log_stream_tokens == (TOKEN_A, TOKEN_B)
    assert settings.plugins == ("x", "y")


@pytest.mark.parametrize("value", ["true", "1", "yes", "on", "TRUE"])
def test_boolean_variable_truthy_spellings(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """AUTH0_EVENTS_ALLOW_UNAUTHENTICATED accepts the usual spellings of true."""
    monkeypatch.setenv("AUTH0_EVENTS_ALLOW_UNAUTHENTICATED", value)
    assert load_settings().allow_unauthenticated is True


def test_settings_are_frozen() -> None:
    """The settings object cannot be changed after it is read."""
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.max_retries = 1


def test_backoff_max_may_equal_the_safe_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """AUTH0_EVENTS_RETRY_BACKOFF_MAX may be exactly the consumer-timeout-safe limit."""
    monkeypatch.setenv("AUTH0_EVENTS_RETRY_BACKOFF_MAX", str(MAX_SAFE_COUNTDOWN_SECONDS))
    assert load_settings().retry_backoff_max == MAX_SAFE_COUNTDOWN_SECONDS


def test_backoff_base_equal_to_max_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A base equal to the cap is allowed (a constant delay bound)."""
    monkeypatch.setenv("AUTH0_EVENTS_RETRY_BACKOFF_BASE", "30")
    monkeypatch.setenv("AUTH0_EVENTS_RETRY_BACKOFF_MAX", "30")
    assert load_settings().retry_backoff_base == 30.0


def test_backoff_base_above_max_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backoff base above the cap is a ConfigurationError naming both variables."""
    monkeypatch.setenv("AUTH0_EVENTS_RETRY_BACKOFF_BASE", "500")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("invalid configuration: ")
    assert "AUTH0_EVENTS_RETRY_BACKOFF_BASE must not exceed AUTH0_EVENTS_RETRY_BACKOFF_MAX" in message


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"retry_backoff_max": 1201}, "AUTH0_EVENTS_RETRY_BACKOFF_MAX"),
        ({"max_retries": -1}, "AUTH0_EVENTS_MAX_RETRIES"),
        ({"max_retries": 101}, "AUTH0_EVENTS_MAX_RETRIES"),
        ({"max_retries": "abc"}, "AUTH0_EVENTS_MAX_RETRIES"),
        ({"retry_backoff_base": 0}, "AUTH0_EVENTS_RETRY_BACKOFF_BASE"),
        ({"max_body_bytes": 0}, "AUTH0_EVENTS_MAX_BODY_BYTES"),
        ({"publish_timeout": -1}, "AUTH0_EVENTS_PUBLISH_TIMEOUT"),
        ({"retry_after_seconds": 0}, "AUTH0_EVENTS_RETRY_AFTER"),
        ({"task_time_limit": 1201}, "AUTH0_EVENTS_TASK_TIME_LIMIT"),
    ],
)
def test_bad_override_names_the_variable(overrides: dict[str, object], variable: str) -> None:
    """A bad value passed by field name is a ConfigurationError naming the environment variable."""
    with pytest.raises(ConfigurationError, match=f"invalid configuration: {variable}: "):
        load_settings(**overrides)


def test_every_problem_is_reported_at_once() -> None:
    """Several bad values give one error naming each of them."""
    with pytest.raises(ConfigurationError) as caught:
        load_settings(max_retries=-1, max_body_bytes=0)
    assert "AUTH0_EVENTS_MAX_RETRIES: " in str(caught.value)
    assert "AUTH0_EVENTS_MAX_BODY_BYTES: " in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTH0_EVENTS_RETRY_BACKOFF_MAX", "1201"),
        ("AUTH0_EVENTS_MAX_RETRIES", "-1"),
        ("AUTH0_EVENTS_MAX_RETRIES", "abc"),
        ("AUTH0_EVENTS_MAX_BODY_BYTES", "0"),
        ("AUTH0_EVENTS_ALLOW_UNAUTHENTICATED", "maybe"),
    ],
)
def test_bad_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A bad value in an environment variable gives a ConfigurationError that names that variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert f"{variable}: " in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTH0_EVENTS_RETRY_BACKOFF_MAX", "1201"),
        ("AUTH0_EVENTS_MAX_RETRIES", "-1"),
        ("AUTH0_EVENTS_MAX_RETRIES", "abc"),
    ],
)
def test_bad_environment_value_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A bad value in an environment variable stops load_settings with ConfigurationError."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match="^invalid configuration: "):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("MAX_RETRIES", "3", "max_retries"),
        ("ROUTES", "sapi", "routes"),
        ("PLUGINS", "some.module", "plugins"),
    ],
)
def test_only_documented_variable_names_are_read(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    """A generic variable named like a field (not the documented AUTH0_EVENTS_* one) is ignored."""
    default = getattr(load_settings(), field)
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(), field) == default


@pytest.mark.parametrize(
    ("field", "variable"),
    [
        ("broker_url", "BROKER_URL"),
        ("log_stream_tokens", "AUTH0_LOG_STREAM_TOKENS"),
        ("allow_unauthenticated", "AUTH0_EVENTS_ALLOW_UNAUTHENTICATED"),
        ("routes", "AUTH0_EVENTS_ROUTES"),
        ("max_retries", "AUTH0_EVENTS_MAX_RETRIES"),
        ("retry_backoff_base", "AUTH0_EVENTS_RETRY_BACKOFF_BASE"),
        ("retry_backoff_max", "AUTH0_EVENTS_RETRY_BACKOFF_MAX"),
        ("max_body_bytes", "AUTH0_EVENTS_MAX_BODY_BYTES"),
        ("plugins", "AUTH0_EVENTS_PLUGINS"),
        ("builtin_handlers", "AUTH0_EVENTS_BUILTIN_HANDLERS"),
        ("publish_timeout", "AUTH0_EVENTS_PUBLISH_TIMEOUT"),
        ("retry_after_seconds", "AUTH0_EVENTS_RETRY_AFTER"),
        ("task_time_limit", "AUTH0_EVENTS_TASK_TIME_LIMIT"),
    ],
)
def test_env_var_for(field: str, variable: str) -> None:
    """env_var_for maps each field to the environment variable that sets it."""
    assert env_var_for(field) == variable


def test_env_var_for_covers_every_field() -> None:
    """Every settings field has an environment variable of its own."""
    names = [env_var_for(field) for field in Settings.model_fields]
    assert len(set(names)) == len(names)
    assert all(name.isupper() for name in names)


# -- secrets: placeholders and short tokens are refused ------------------------------------------------


def env_example_value(variable: str) -> str:
    """The value .env.example gives ``variable``."""
    match = re.search(rf"^{variable}=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert match is not None, variable
    return match.group(1)


@pytest.mark.parametrize("variable", ["AUTH0_LOG_STREAM_TOKENS", "AUTH0_EVENTS_API_TOKENS"])
def test_tokens_split_on_commas(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """Token lists are split, stripped, and empty items dropped, like every comma-separated variable."""
    monkeypatch.setenv(variable, f" {TOKEN_A} ,,{TOKEN_B}, ")
    settings = load_settings()
    field = "log_stream_tokens" if variable == "AUTH0_LOG_STREAM_TOKENS" else "api_tokens"
    assert getattr(settings, field) == (TOKEN_A, TOKEN_B)


@pytest.mark.parametrize("variable", ["AUTH0_LOG_STREAM_TOKENS", "AUTH0_EVENTS_API_TOKENS"])
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("x", "token 1 has 1 character"),
        ("a" * (MIN_TOKEN_LENGTH - 1), f"token 1 has {MIN_TOKEN_LENGTH - 1} characters"),
        (f"{TOKEN_A},short-rotated-token", "token 2 has 19 characters"),
        ("change-me-to-a-long-random-token", "token 1 is the placeholder of .env.example"),
        (f"{TOKEN_A},CHANGE-ME-{TOKEN_B}", "token 2 is the placeholder of .env.example"),
    ],
    ids=["one-character", "one-short", "second-short", "env-example", "placeholder-inside"],
)
def test_short_or_placeholder_token_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    """A too-short token or a placeholder stops start-up, naming the variable but not the token."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"{variable}: {says}" in message
    assert f"at least {MIN_TOKEN_LENGTH} random characters" in message
    assert "secrets.token_urlsafe(32)" in message
    for token in value.split(","):
        assert token not in message, "the message must not repeat a secret"
        assert token not in str(caught.value.__cause__), "nor must the error it was raised from"


def test_env_example_stream_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream token .env.example ships with cannot be used as it is."""
    monkeypatch.setenv("AUTH0_LOG_STREAM_TOKENS", env_example_value("AUTH0_LOG_STREAM_TOKENS"))
    with pytest.raises(ConfigurationError, match="AUTH0_LOG_STREAM_TOKENS: token 1 is the placeholder"):
        load_settings()


def test_token_of_the_minimum_length_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exactly the minimum length is enough; the development switch still allows no token at all."""
    monkeypatch.setenv("AUTH0_LOG_STREAM_TOKENS", TOKEN_A)
    assert load_settings().log_stream_tokens == (TOKEN_A,)
    monkeypatch.setenv("AUTH0_LOG_STREAM_TOKENS", "")
    assert load_settings(allow_unauthenticated=True).log_stream_tokens == ()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "FLOWER_BASIC_AUTH is not set"),
        ("admin:change-me", "login 1 has the placeholder password of .env.example"),
        ("admin:", "login 1 has an empty password"),
        ("admin", "login 1 is not user:password"),
        (":a-long-enough-password", "login 1 has an empty user name"),
        ("ops:a-long-enough-password,admin:ChangeMe", "login 2 has the placeholder password"),
    ],
    ids=["unset", "env-example", "empty-password", "no-colon", "empty-user", "second-placeholder"],
)
def test_flower_login_refuses_placeholders_and_empty_passwords(value: str, says: str) -> None:
    """FLOWER_BASIC_AUTH: each comma-separated user:password needs both parts and no placeholder."""
    with pytest.raises(ConfigurationError) as caught:
        check_flower_basic_auth(value)
    assert says in str(caught.value)
    assert "FLOWER_BASIC_AUTH" in str(caught.value)
    password = value.rpartition(":")[2]
    assert not password or password not in str(caught.value)


def test_flower_login_of_env_example_is_refused() -> None:
    """The Flower login .env.example ships with cannot be used as it is."""
    with pytest.raises(ConfigurationError, match="placeholder password"):
        check_flower_basic_auth(env_example_value("FLOWER_BASIC_AUTH"))


@pytest.mark.parametrize("value", ["admin:Xq3-rT9v_kLm2", "ops:one:with:colons,admin:another-pass"])
def test_flower_login_with_real_passwords_is_accepted(value: str) -> None:
    """user:password pairs with a real password pass (a password may contain colons, as Flower allows)."""
    check_flower_basic_auth(value)


@pytest.mark.parametrize(
    ("key", "says"),
    [("", "is not set"), ("short-key", "has 9 characters"), ("change-me-" + "x" * 30, "is the placeholder")],
    ids=["unset", "short", "placeholder"],
)
def test_masking_needs_a_secret_key(monkeypatch: pytest.MonkeyPatch, key: str, says: str) -> None:
    """AUTH0_EVENTS_LOG_MASK_PII without a real AUTH0_EVENTS_LOG_MASK_KEY stops start-up naming it (an
    unkeyed hash of an IPv4 address is reversed by hashing all 2**32); without masking no key is needed."""
    monkeypatch.setenv("AUTH0_EVENTS_LOG_MASK_KEY", key)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(log_mask_pii=True)
    assert f"AUTH0_EVENTS_LOG_MASK_KEY {says}" in str(caught.value)
    if key:
        assert key not in str(caught.value)
    assert load_settings(log_mask_pii=False).log_mask_pii is False
    monkeypatch.setenv("AUTH0_EVENTS_LOG_MASK_KEY", TOKEN_A)
    assert load_settings(log_mask_pii=True).log_mask_key == TOKEN_A


@pytest.mark.parametrize(
    ("pool", "given", "expected"),
    [
        ("threads", None, 16),
        ("prefork", None, 2),
        ("threads", "0", 16),
        ("threads", "3", 3),
        ("prefork", "5", 5),
    ],
)
def test_worker_concurrency_defaults_to_the_pools_usual_figure(
    monkeypatch: pytest.MonkeyPatch, pool: str, given: str | None, expected: int
) -> None:
    """The Procfile's workers take no --concurrency: WORKER_CONCURRENCY, or 16 threads / 2 processes."""
    monkeypatch.setenv("AUTH0_EVENTS_WORKER_POOL", pool)
    if given is None:
        monkeypatch.delenv("WORKER_CONCURRENCY", raising=False)
    else:
        monkeypatch.setenv("WORKER_CONCURRENCY", given)
    assert worker_concurrency(load_settings()) == expected


def test_threads_is_the_default_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTH0_EVENTS_WORKER_POOL", raising=False)
    assert load_settings().worker_pool == "threads"
