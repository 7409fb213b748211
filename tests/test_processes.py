"""The Procfile, docker-compose.yml, .env.example and celeryconfig.py agree on queues, commands, exposure."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kernel.routing import DLQ_SUFFIX, QUARANTINE_QUEUE, parse_routes
from kernel.settings import DEFAULT_ROUTES, Settings, check_flower_basic_auth, load_settings
from tests.helpers import ROOT, procfile

PASSWORDS = ("RABBITMQ_PASSWORD", "POSTGRES_PASSWORD")


def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def command_environment(command: str) -> dict[str, str]:
    """The variables a command sets for itself (``NAME=value`` words before the program)."""
    assignments = {}
    for word in shlex.split(command):
        name, equals, value = word.partition("=")
        if not (equals and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name)):
            break
        assignments[name] = value
    return assignments


def program(command: str) -> str:
    """The command without its leading variable assignments."""
    words = shlex.split(command)
    return shlex.join(words[len(command_environment(command)) :])


def worker_queues(command: str) -> list[str]:
    """The -Q list of a celery worker command."""
    words = shlex.split(command)
    return words[words.index("-Q") + 1].split(",")


def default_celeryconfig_queues() -> list[dict[str, Any]]:
    """The queues celeryconfig.py declares with the default environment, from a clean process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH0_EVENTS_", "BROKER_URL"))}
    code = (
        "import json, celeryconfig; print(json.dumps([{'name': q.name, 'args': q.queue_arguments} "
        "for q in celeryconfig.task_queues]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return list(json.loads(out.stdout))


WORKERS = {name: command for name, command in procfile().items() if name.startswith("worker_")}


def test_procfile_has_web_workers_and_flower() -> None:
    """web serves the app factory on $PORT, each worker consumes a -Q list, flower has a login."""
    processes = procfile()
    assert "gunicorn" in processes["web"]
    assert "${PORT" in processes["web"]
    assert "'app:create_app()'" in processes["web"]
    assert WORKERS, "no worker_… process"
    assert all(program(command).startswith("celery -A tasks worker ") for command in WORKERS.values())
    # The login is checked first (tasks/flower_login.py), then exec makes Flower the process signals reach.
    assert processes["flower"].startswith("python -m tasks.flower_login && exec celery -A tasks flower ")
    assert "--basic-auth=" in processes["flower"]


def test_worker_queues_cover_the_default_routes_exactly_once() -> None:
    """Every default work queue has exactly one worker group; no worker consumes a DLQ or quarantine."""
    consumed = [queue for command in WORKERS.values() for queue in worker_queues(command)]
    assert sorted(consumed) == sorted(parse_routes(DEFAULT_ROUTES).queues)
    assert len(consumed) == len(set(consumed))
    assert not [q for q in consumed if q.endswith(DLQ_SUFFIX) or q == QUARANTINE_QUEUE]


def test_worker_metrics_ports_are_distinct() -> None:
    """Each worker node serves its metrics on a port of its own; the receiver serves them on $PORT."""
    ports = [command_environment(command).get("AUTH0_EVENTS_METRICS_PORT") for command in WORKERS.values()]
    assert all(port and port.isdigit() for port in ports), ports
    assert len(set(ports)) == len(ports)
    assert "--config gunicorn.conf.py" in procfile()["web"]


def test_worker_node_names_are_unique() -> None:
    """Two workers with one node name clash on the broker, so each group has its own -n."""
    names = [shlex.split(command)[shlex.split(command).index("-n") + 1] for command in WORKERS.values()]
    assert len(names) == len(set(names)) == len(WORKERS)


@pytest.mark.process
def test_celeryconfig_declares_the_procfile_queues_with_dead_lettering() -> None:
    """With the default environment celeryconfig lists the same queues, each dead-lettering to its DLQ."""
    queues = default_celeryconfig_queues()
    consumed = {queue for command in WORKERS.values() for queue in worker_queues(command)}
    assert {q["name"] for q in queues} == consumed
    for queue in queues:
        assert queue["args"] == {
            "x-dead-letter-exchange": "auth0.events.dlx",
            "x-dead-letter-routing-key": queue["name"],
        }


@pytest.mark.parametrize("process", sorted(procfile()))
def test_compose_runs_each_procfile_line_word_for_word(process: str) -> None:
    """Each Procfile process is a compose service running the same command through sh."""
    service = compose()["services"][process]
    shell, flag, command = service["command"]
    assert (shell, flag) == ("sh", "-c")
    assert command.replace("$$", "$") == procfile()[process]


def test_compose_has_rabbitmq_with_management_and_health_checks() -> None:
    """RabbitMQ runs the management image; every app service waits for it to be healthy and has a check."""
    services = compose()["services"]
    assert services["rabbitmq"]["image"].endswith("-management")
    assert "healthcheck" in services["rabbitmq"]
    for name in set(procfile()) - {"release"}:
        assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["release"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in services[name], name


def test_release_migrates_the_database_before_the_other_processes() -> None:
    """The Procfile's release applies the migrations; compose runs it once, after PostgreSQL is up."""
    assert procfile()["release"] == "auth0-events db upgrade"
    release = compose()["services"]["release"]
    assert release["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "restart" not in release
    assert (
        release["environment"]["DATABASE_URL"] == compose()["services"]["web"]["environment"]["DATABASE_URL"]
    )


def test_compose_default_routes_match_the_settings_default() -> None:
    """Compose's AUTH0_EVENTS_ROUTES default is the same as the code's, so its workers' -Q lists fit."""
    environment = compose()["services"]["web"]["environment"]
    default = re.fullmatch(r"\$\{AUTH0_EVENTS_ROUTES:-(.*)\}", environment["AUTH0_EVENTS_ROUTES"])
    assert default is not None
    assert default.group(1) == DEFAULT_ROUTES


def test_env_example_documents_every_setting() -> None:
    """.env.example names every environment variable the settings read, and the compose file passes them."""
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    variables = {str(field.validation_alias) for field in Settings.model_fields.values()}
    assert variables <= documented
    passed = set(compose()["services"]["web"]["environment"])
    # Per-process variables (each worker's metrics port) are set on the command lines that need them.
    passed |= {name for command in procfile().values() for name in command_environment(command)}
    # The development-only switch is deliberately not offered by the compose file.
    assert variables - {"AUTH0_EVENTS_ALLOW_UNAUTHENTICATED"} <= passed


def env_example() -> dict[str, str]:
    """The variables .env.example sets, with their values."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z0-9_]+=", line))


def test_only_the_proxy_is_published_beyond_localhost() -> None:
    """The proxy publishes 443 and 80; the receiver, RabbitMQ, metrics and Flower only on 127.0.0.1."""
    services = compose()["services"]
    assert services["proxy"]["ports"] == ["443:443", "80:80"]
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert set(published) == {"proxy", "rabbitmq", "web", "flower", *WORKERS}
    for name, ports in published.items():
        if name != "proxy":
            assert all(port.startswith("127.0.0.1:") for port in ports), (name, ports)
    assert "ports" not in services["postgres"]


def test_proxy_fronts_the_receiver_with_its_body_limit() -> None:
    """The proxy renders deploy/nginx's template for web:$PORT, with the receiver's own body limit."""
    services = compose()["services"]
    proxy, web = services["proxy"], services["web"]
    assert proxy["environment"]["PROXY_RECEIVER"] == f"web:{web['environment']['PORT']}"
    body_limit = web["environment"]["AUTH0_EVENTS_MAX_BODY_BYTES"]
    assert proxy["environment"]["PROXY_MAX_BODY_BYTES"] == body_limit
    assert "./deploy/nginx/templates:/etc/nginx/templates:ro" in proxy["volumes"]
    assert (ROOT / "deploy" / "nginx" / "templates" / "default.conf.template").is_file()
    assert proxy["depends_on"]["web"]["condition"] == "service_healthy"


def test_compose_refuses_to_start_without_the_broker_and_database_passwords() -> None:
    """Every use of RABBITMQ_PASSWORD and POSTGRES_PASSWORD is ${NAME:?…}: no silent default password."""
    text = (ROOT / "docker-compose.yml").read_text()
    for name in PASSWORDS:
        uses = re.findall(rf"\$\{{{name}([^}}]*)\}}", text)
        assert uses, name
        assert all(use.startswith(":?") for use in uses), (name, uses)
    assert "auth0events}" not in text  # the old default, ${…:-auth0events}


def test_env_example_documents_the_compose_passwords_empty() -> None:
    """.env.example lists both passwords, empty, so a copy of it is refused by compose until they are set."""
    documented = env_example()
    assert all(documented[name] == "" for name in PASSWORDS)


@pytest.mark.process
def test_new_env_fills_every_placeholder_with_an_accepted_secret(tmp_path: Path) -> None:
    """scripts/new-env (scripts/run's first start) writes a .env whose secrets pass every start-up check."""
    target = tmp_path / "env"
    subprocess.run(
        [str(ROOT / "scripts" / "new-env"), str(target)], check=True, capture_output=True, timeout=60
    )
    written = dict(
        line.split("=", 1) for line in target.read_text().splitlines() if re.match(r"^[A-Z0-9_]+=", line)
    )
    assert set(written) == set(env_example())
    load_settings(log_stream_tokens=written["AUTH0_LOG_STREAM_TOKENS"])
    check_flower_basic_auth(written["FLOWER_BASIC_AUTH"])
    assert all(len(written[name]) >= 24 for name in PASSWORDS)
    assert not [value for value in written.values() if "change-me" in value]


def test_the_image_gets_no_certificate_and_flower_checks_its_login() -> None:
    """The build context leaves the proxy's keys out; the image has the module the flower line runs first."""
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"deploy/certs", "deploy/acme", ".env"} <= set(ignored)
    assert "COPY tasks ./tasks" in (ROOT / "Dockerfile").read_text()
    assert (ROOT / "tasks" / "flower_login.py").is_file()


def test_the_image_holds_every_file_the_processes_read_from_their_directory() -> None:
    """Celery, gunicorn and Flower each read a module of the repository's root from the working directory;
    an image without one runs differently from the Procfile (Flower without flowerconfig.py logs in
    tornado's format, unmasked)."""
    copied = " ".join(
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY")
    )
    for name in ("celeryconfig.py", "gunicorn.conf.py", "flowerconfig.py", "app", "tasks", "cli"):
        assert name in copied.split(), f"the Dockerfile does not copy {name}"


@pytest.mark.process
def test_git_ignores_the_default_database_and_its_sqlite_companions() -> None:
    """The default DATABASE_URL's file and the -wal, -shm and -journal files SQLite keeps beside it (WAL
    mode: kernel/storage/db.py) stay out of `git status`, and so do a *.db ledger's."""
    default = Path(Settings.model_fields["database_url"].default.removeprefix("sqlite:///"))
    names = [
        f"{base}{suffix}" for base in (default, "ledger.db") for suffix in ("", "-wal", "-shm", "-journal")
    ]
    for name in names:
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, timeout=30)
        assert ignored.returncode == 0, f"{name} is not in .gitignore"
