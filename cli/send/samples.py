"""Realistic sample Auth0 log records, for demos, smoke checks after a deploy and load tests.

Pure and seedable: ``SampleGenerator(seed=7, clock=fixed)`` returns the same records every time. Each
record is a log stream envelope ``{"log_id", "data": {...}}`` carrying the fields a record of its type
has in Auth0's log schemas and captured stream samples. The default mix is mostly successful logins,
with token exchanges, logouts and signups, bursts of failed logins from a few IP addresses (sometimes
ending in a blocked account), password changes, Management API operations and the occasional breached
password.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kernel.catalogue import describe

# Relative weights of the default mix ("--types mix"), roughly what a consumer tenant logs.
MIX_WEIGHTS: Mapping[str, float] = {
    "s": 44.0,
    "seacft": 9.0,
    "sertft": 6.0,
    "ssa": 5.0,
    "slo": 6.0,
    "ss": 4.0,
    # Failed logins mostly come in bursts (see SampleGenerator._start_burst), about 8% of records.
    "f": 0.3,
    "fp": 0.9,
    "fu": 0.4,
    "fsa": 2.0,
    "sv": 1.0,
    "scpr": 1.0,
    "scp": 1.5,
    "fcp": 0.5,
    "fs": 1.0,
    "sapi": 3.0,
    "mgmt_api_read": 0.5,
    "sdu": 0.3,
    "flo": 0.2,
    "w": 0.5,
    "pwd_leak": 0.4,
    "signup_pwd_leak": 0.05,
    "reset_pwd_leak": 0.05,
    "limit_wc": 0.2,
    "limit_mu": 0.2,
}
MIX = "mix"
_BREACHED_DESCRIPTIONS = {
    "pwd_leak": "Blocked login with a breached password.",
    "signup_pwd_leak": "Blocked signup with a breached password.",
    "reset_pwd_leak": "Blocked password reset with a breached password.",
}
FAILED_LOGINS = ("f", "fp", "fu")
INVALID_KINDS = ("missing_type", "missing_log_id", "not_object")

TENANT = "acme"
HOSTNAME = "acme.eu.auth0.com"
_CODE = re.compile(r"^[a-z0-9_]+$")
_FIRST_NAMES = (
    "ana", "ben", "chloe", "dev", "elif", "femi", "grace", "hugo", "ines", "jonas", "kai", "lena", "mateo",
    "nadia", "omar", "priya", "quinn", "rosa", "sven", "tariq", "uma", "vera", "wei", "yusuf", "zoe",
)  # fmt: skip
_DOMAINS = ("example.com", "example.org", "mail.example.net", "acme.example")
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Mobile Safari/537.36",
)
_BOT_USER_AGENTS = ("python-requests/2.32.3", "curl/8.5.0", "Go-http-client/1.1")
_SCOPES = ("openid profile email", "openid profile email offline_access", "openid read:orders")
_MANAGEMENT_CALLS = (
    ("Update a user", "PATCH", "/api/v2/users/{user_id}", 200),
    ("Create a user", "POST", "/api/v2/users", 201),
    ("Delete a user", "DELETE", "/api/v2/users/{user_id}", 204),
    ("Assign roles to a user", "POST", "/api/v2/users/{user_id}/roles", 204),
    ("Update a client", "PATCH", "/api/v2/clients/{client_id}", 200),
    ("Create a log stream", "POST", "/api/v2/log-streams", 201),
)
_FAILURE_MESSAGES = {
    "f": ("Invalid response from the identity provider", "Callback URL mismatch.", "Unauthorized"),
    "fp": ("Wrong email or password.",),
    "fu": ("Wrong email or password.",),
    "fs": ("The user already exists.", "PasswordStrengthError: Password is too weak"),
    "fcp": ("PasswordHistoryError: Password has previously been used",),
    "flo": ('Invalid URL in "returnTo" parameter',),
    "fsa": ("Login required", "Consent required"),
}


@dataclass(frozen=True)
class _User:
    user_id: str
    user_name: str
    connection: str
    connection_id: str
    strategy: str
    strategy_type: str


@dataclass(frozen=True)
class _Client:
    client_id: str
    client_name: str


@dataclass(frozen=True)
class _Actor:
    """Who did it, from where: the fields most records share."""

    user: _User
    client: _Client
    ip: str
    user_agent: str


@dataclass
class SampleBatch:
    """The records of one request, and how many of them are meant as duplicates or as invalid."""

    records: list[Any] = field(default_factory=list)
    duplicates: int = 0
    invalid: int = 0


def parse_types(spec: str) -> tuple[str, ...] | None:
    """Parse ``--types``: ``mix`` (None: the weighted default) or comma-separated event codes.

    Raises ValueError naming an entry that is not an event code.
    """
    codes = tuple(dict.fromkeys(item.strip() for item in spec.split(",") if item.strip()))
    if not codes:
        raise ValueError("name at least one event code, or 'mix'")
    if codes == (MIX,):
        return None
    for code in codes:
        if not _CODE.match(code):
            raise ValueError(f"{code!r} is not an event code (lowercase letters, digits and _), nor 'mix'")
    return codes


def format_date(moment: datetime) -> str:
    """Return ``moment`` the way Auth0 writes dates: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SampleGenerator:
    """Realistic Auth0 log records; the same seed and clock give the same records.

    ``types`` None is the weighted default mix, with bursts of failed logins from a few IPs; a list of
    codes picks each with equal probability (codes without a template get the common fields).
    """

    def __init__(
        self,
        types: Sequence[str] | None = None,
        *,
        seed: int | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        # Sample data, not secrets: a seedable PRNG is what is wanted here.
        self._random = random.Random(seed)  # noqa: S311
        self._clock = clock
        self._mix = types is None
        self._types = tuple(MIX_WEIGHTS) if types is None else tuple(types)
        self._weights = tuple(MIX_WEIGHTS.values()) if types is None else tuple(1.0 for _ in self._types)
        self._pending: list[tuple[str, _Actor]] = []
        self._clients = (
            _Client(self._token(32), "Acme Web"),
            _Client(self._token(32), "Acme iOS"),
            _Client(self._token(32), "Default App"),
        )
        self._management_client = _Client(self._token(32), "Acme Backoffice (M2M)")
        self._connections = {
            "database": ("Username-Password-Authentication", "con_" + self._token(16)),
            "google-oauth2": ("google-oauth2", "con_" + self._token(16)),
        }
        self._users = tuple(self._new_user(index) for index in range(60))
        self._ips = tuple(self._documentation_ip() for _ in range(40))
        # A few addresses that failed logins come from, in bursts.
        self._attacker_ips = tuple(f"203.0.113.{self._random.randint(2, 254)}" for _ in range(3))

    def record(self) -> dict[str, Any]:
        """Return the next valid record of the mix."""
        if self._pending:
            code, actor = self._pending.pop(0)
            return self._build(code, actor)
        code = self._random.choices(self._types, self._weights)[0]
        if self._mix and code in FAILED_LOGINS and self._random.random() < 0.6:
            return self._start_burst()
        return self._build(code, self._actor_for(code))

    def invalid_record(self) -> Any:
        """Return a record the receiver must quarantine: no data.type, no log_id, or not an object."""
        kind = self._random.choice(INVALID_KINDS)
        if kind == "not_object":
            # No arrays: a JSON Lines line holding an array is read as that many records.
            return self._random.choice(("not a log record", 42, None, True))
        record = self.record()
        if kind == "missing_type":
            del record["data"]["type"]
        else:
            del record["log_id"]
            del record["data"]["log_id"]
        return record

    def batches(
        self, count: int, batch_size: int, duplicates: float = 0.0, invalid: float = 0.0
    ) -> Iterator[SampleBatch]:
        """Yield ``count`` records in batches of ``batch_size`` (the last may be smaller).

        Each record is, with probability ``invalid``, one the receiver quarantines, else with
        probability ``duplicates`` a copy of a valid record sent earlier in the same batch (the receiver
        counts it as a duplicate), or of the previous request's when batches hold one record.
        """
        previous: dict[str, Any] | None = None
        sent = 0
        while sent < count:
            batch = SampleBatch()
            valid: list[dict[str, Any]] = []
            for _ in range(min(batch_size, count - sent)):
                roll = self._random.random()
                earlier = valid or ([previous] if batch_size == 1 and previous else [])
                if roll < invalid:
                    batch.records.append(self.invalid_record())
                    batch.invalid += 1
                elif roll < invalid + duplicates and earlier:
                    batch.records.append(self._random.choice(earlier))
                    batch.duplicates += 1
                else:
                    record = self.record()
                    batch.records.append(record)
                    valid.append(record)
            previous = valid[-1] if valid else previous
            sent += len(batch.records)
            yield batch

    # -- records ---------------------------------------------------------------------------------

    def _build(self, code: str, actor: _Actor) -> dict[str, Any]:
        now = self._clock()
        log_id = "900" + now.astimezone(UTC).strftime("%Y%m%d%H%M%S") + self._digits(39)
        user, client = actor.user, actor.client
        data: dict[str, Any] = {
            "date": format_date(now),
            "type": code,
            "description": describe(code).description or describe(code).name,
            "connection": user.connection,
            "connection_id": user.connection_id,
            "client_id": client.client_id,
            "client_name": client.client_name,
            "ip": actor.ip,
            "user_agent": actor.user_agent,
            "hostname": HOSTNAME,
            "user_id": user.user_id,
            "user_name": user.user_name,
            "strategy": user.strategy,
            "strategy_type": user.strategy_type,
            "details": {},
            "isMobile": "Mobile" in actor.user_agent,
            "tenant_name": TENANT,
            "log_id": log_id,
        }
        builder = _BUILDERS.get(code)
        if builder is not None:
            builder(self, data, now)
        return {"log_id": log_id, "data": data}

    def _login_success(self, data: dict[str, Any], now: datetime) -> None:
        elapsed = self._random.randint(800, 25_000)
        completed = int(now.timestamp() * 1000)
        data["description"] = ""
        data["details"] = {
            "prompts": [],
            "initiatedAt": completed - elapsed,
            "completedAt": completed,
            "elapsedTime": elapsed,
            "session_id": self._token(32),
            "stats": {"loginsCount": self._random.randint(1, 400)},
        }

    def _failure(self, data: dict[str, Any], _now: datetime) -> None:
        message = self._random.choice(_FAILURE_MESSAGES.get(data["type"], ("Unauthorized",)))
        data["description"] = message
        data["details"] = {"error": {"message": message}}
        if data["type"] in ("f", "fsa"):
            data["scope"] = self._scope()
        if data["type"] in ("fu", "fs"):
            data["user_id"] = ""

    def _signup(self, data: dict[str, Any], _now: datetime) -> None:
        data["description"] = ""
        data["details"] = {
            "body": {
                "tenant": TENANT,
                "client_id": data["client_id"],
                "connection": data["connection"],
                "email": data["user_name"],
                "password": "*****",
            }
        }

    def _token_exchange(self, data: dict[str, Any], _now: datetime) -> None:
        data["audience"] = "https://api.acme.example/"
        data["scope"] = self._scope()
        data["details"] = {"code": "*" * 30 + self._token(3)} if data["type"] == "seacft" else {}

    def _silent_auth(self, data: dict[str, Any], now: datetime) -> None:
        self._login_success(data, now)
        data["description"] = "Successful silent authentication"
        data["scope"] = self._scope()

    def _logout(self, data: dict[str, Any], _now: datetime) -> None:
        data["description"] = "User successfully logged out."
        data["details"] = {
            "return_to": "https://app.acme.example/",
            "allowed_logout_url": ["https://app.acme.example/"],
            "session_id": self._token(32),
        }

    def _password_change(self, data: dict[str, Any], _now: datetime) -> None:
        descriptions = {"scp": "Password changed", "scpr": "Change password request", "sv": "Email verified"}
        data["description"] = descriptions[data["type"]]
        data["details"] = {"email": data["user_name"]}

    def _management_api(self, data: dict[str, Any], _now: datetime) -> None:
        description, method, path, status = self._random.choice(_MANAGEMENT_CALLS)
        if data["type"] == "mgmt_api_read":
            description, method, path, status = "Get a client", "GET", "/api/v2/clients/{client_id}", 200
        target = self._random.choice(self._users)
        path = path.format(user_id=target.user_id, client_id=self._clients[0].client_id)
        admin = self._random.choice(self._users)
        data.update(
            description=description,
            client_id=self._management_client.client_id,
            client_name=self._management_client.client_name,
            connection="",
            connection_id="",
            user_id="",
            user_name="",
            strategy="",
            strategy_type="",
        )
        data["details"] = {
            "request": {
                "method": method.lower(),
                "path": path,
                "query": {},
                "body": {} if method in ("GET", "DELETE") else {"blocked": False},
                "channel": "https://manage.auth0.com/",
                "ip": data["ip"],
                "auth": {
                    "user": {"user_id": admin.user_id, "name": admin.user_name, "email": admin.user_name},
                    "strategy": "jwt",
                    "credentials": {"jti": self._token(32), "scopes": ["update:users", "read:clients"]},
                },
            },
            "response": {"statusCode": status, "body": {}},
        }

    def _user_deleted(self, data: dict[str, Any], _now: datetime) -> None:
        data["description"] = "User deleted"
        data["details"] = {"id": data["user_id"]}

    def _warning(self, data: dict[str, Any], _now: datetime) -> None:
        data["description"] = "Unable to send email: rate limit reached"
        data["details"] = {"warning": data["description"]}

    def _breached_password(self, data: dict[str, Any], _now: datetime) -> None:
        # As Auth0 writes these failure logs: no user_id, the address typed in user_name.
        data["description"] = _BREACHED_DESCRIPTIONS[data["type"]]
        data["details"] = {"ip": data["ip"], "email": data["user_name"]}
        data["user_id"] = ""

    def _blocked(self, data: dict[str, Any], _now: datetime) -> None:
        if data["type"] == "limit_wc":
            data["description"] = (
                "An IP address is blocked because it reached the maximum failed login attempts into a "
                "single account."
            )
        else:
            data["description"] = (
                "An IP address is blocked because it attempted too many failed logins without a "
                "successful login."
            )
            data.update(user_id="", user_name="")
        data["details"] = {"ip": data["ip"]}

    # -- actors ----------------------------------------------------------------------------------

    def _start_burst(self) -> dict[str, Any]:
        """Failed logins from one attacker IP against one account; a long one gets the account blocked."""
        ip = self._random.choice(self._attacker_ips)
        agent = self._random.choice(_BOT_USER_AGENTS)
        target = self._random.choice(self._users)
        client = self._clients[0]
        length = self._random.randint(3, 12)
        for _ in range(length):
            code = self._random.choices(FAILED_LOGINS, (1, 6, 2))[0]
            user = self._unknown_user(target) if code == "fu" else target
            self._pending.append((code, _Actor(user, client, ip, agent)))
        if length >= 10:
            self._pending.append(("limit_wc", _Actor(target, client, ip, agent)))
        code, actor = self._pending.pop(0)
        return self._build(code, actor)

    def _actor_for(self, code: str) -> _Actor:
        user = self._random.choice(self._users)
        if code == "fu":
            user = self._unknown_user(user)
        ip = self._random.choice(self._ips)
        if code in FAILED_LOGINS + ("limit_wc", "limit_mu") and self._random.random() < 0.5:
            ip = self._random.choice(self._attacker_ips)
        return _Actor(user, self._random.choice(self._clients), ip, self._random.choice(_USER_AGENTS))

    def _new_user(self, index: int) -> _User:
        name = f"{self._random.choice(_FIRST_NAMES)}.{index}@{self._random.choice(_DOMAINS)}"
        if self._random.random() < 0.25:
            connection, connection_id = self._connections["google-oauth2"]
            return _User(
                f"google-oauth2|{self._digits(21)}",
                name,
                connection,
                connection_id,
                "google-oauth2",
                "social",
            )
        connection, connection_id = self._connections["database"]
        return _User(f"auth0|{self._hex(24)}", name, connection, connection_id, "auth0", "database")

    def _unknown_user(self, near: _User) -> _User:
        """Someone typing a user name the tenant does not know: Auth0 logs no user_id."""
        local, _, domain = near.user_name.partition("@")
        return _User("", f"{local}{self._random.randint(1, 99)}@{domain}", *self._database_fields())

    def _database_fields(self) -> tuple[str, str, str, str]:
        connection, connection_id = self._connections["database"]
        return connection, connection_id, "auth0", "database"

    def _documentation_ip(self) -> str:
        network = self._random.choice(("192.0.2", "198.51.100", "81.2.69"))
        return f"{network}.{self._random.randint(1, 254)}"

    # -- values ----------------------------------------------------------------------------------

    def _scope(self) -> str | list[str]:
        """A scope as Auth0 sends it: a space-separated string or an array, both occur."""
        scope = self._random.choice(_SCOPES)
        return scope if self._random.random() < 0.5 else scope.split()

    def _digits(self, length: int) -> str:
        return "".join(self._random.choices(string.digits, k=length))

    def _hex(self, length: int) -> str:
        return "".join(self._random.choices("0123456789abcdef", k=length))

    def _token(self, length: int) -> str:
        return "".join(self._random.choices(string.ascii_letters + string.digits, k=length))


_Builder = Callable[[SampleGenerator, dict[str, Any], datetime], None]
_BUILDERS: dict[str, _Builder] = {
    "s": SampleGenerator._login_success,
    "f": SampleGenerator._failure,
    "fp": SampleGenerator._failure,
    "fu": SampleGenerator._failure,
    "fs": SampleGenerator._failure,
    "fcp": SampleGenerator._failure,
    "flo": SampleGenerator._failure,
    "fsa": SampleGenerator._failure,
    "ss": SampleGenerator._signup,
    "seacft": SampleGenerator._token_exchange,
    "sertft": SampleGenerator._token_exchange,
    "seccft": SampleGenerator._token_exchange,
    "ssa": SampleGenerator._silent_auth,
    "slo": SampleGenerator._logout,
    "scp": SampleGenerator._password_change,
    "scpr": SampleGenerator._password_change,
    "sv": SampleGenerator._password_change,
    "sapi": SampleGenerator._management_api,
    "mgmt_api_read": SampleGenerator._management_api,
    "sdu": SampleGenerator._user_deleted,
    "w": SampleGenerator._warning,
    "pwd_leak": SampleGenerator._breached_password,
    "signup_pwd_leak": SampleGenerator._breached_password,
    "reset_pwd_leak": SampleGenerator._breached_password,
    "limit_wc": SampleGenerator._blocked,
    "limit_mu": SampleGenerator._blocked,
}
