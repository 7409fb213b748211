"""The layers hold at run time: what each import loads, the plug-in API's old paths, the fast ``--help``.

pyproject.toml's import-linter contracts check the imports as written (``lint-imports`` in .ci/run); these
tests check what a fresh interpreter actually loads, and what the contracts cannot see.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points

import click
import pytest

import cli
import kernel.events
import kernel.storage.db
import tasks.db
import tasks.events
import tasks.handlers
from tests.helpers import ROOT

OUR_PACKAGES = ("app", "tasks", "cli", "kernel")
#: The receiver's web stack; the kernel and the worker never need it.
WEB = ("flask", "werkzeug", "gunicorn")


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code`` in the repository's root."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def of(package: str, modules: set[str]) -> set[str]:
    """The modules of ``package`` among ``modules``, the package itself included."""
    return {name for name in modules if name == package or name.startswith(package + ".")}


@pytest.mark.process
def test_importing_the_receiver_loads_nothing_of_the_worker() -> None:
    """``import app`` (what gunicorn does) loads no module of tasks/: not the task, ledger or handlers."""
    loaded = loaded_after("import app")
    assert of("app", loaded)
    assert of("tasks", loaded) == set()
    assert of("cli", loaded) == set()


@pytest.mark.process
def test_the_kernel_loads_neither_the_layers_above_it_nor_the_web_stack() -> None:
    """Every kernel module together loads no app, tasks or cli module, and neither Flask nor gunicorn.

    (Celery's own constructor imports celery.worker for its Django fix-up: that one is Celery's.)
    """
    loaded = loaded_after(
        "import importlib, pkgutil, kernel\n"
        "for found in pkgutil.walk_packages(kernel.__path__, 'kernel.'):\n"
        "    if '.migrations' not in found.name:\n"
        "        importlib.import_module(found.name)"
    )
    assert "kernel.storage.archive" in loaded
    for package in ("app", "tasks", "cli", *WEB):
        assert of(package, loaded) == set(), package


@pytest.mark.process
def test_auth0_events_help_loads_no_command_flask_or_worker() -> None:
    """``auth0-events --help`` imports no command's module: no Flask, no worker, no database, no broker."""
    loaded = loaded_after(
        "from click.testing import CliRunner\n"
        "import cli\n"
        "result = CliRunner().invoke(cli.main, ['--help'])\n"
        "assert result.exit_code == 0 and 'topology' in result.output, result.output"
    )
    for package in ("app", "tasks", "kernel", *WEB, "celery", "kombu", "sqlalchemy", "pydantic", "httpx"):
        assert of(package, loaded) == set(), package
    assert of("cli", loaded) == {"cli"}


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
@pytest.mark.parametrize("limit", [20, 45, 60, 74, 200])
def test_the_help_lists_each_command_with_its_own_first_sentence(name: str, limit: int) -> None:
    """The line ``--help`` shows without importing a command is the one click shows from the command."""
    context = click.Context(cli.main)
    command = cli.main.get_command(context, name)
    assert command is not None
    listed = click.Command(name, help=cli.COMMANDS[name][1]).get_short_help_str(limit)
    assert listed == command.get_short_help_str(limit)


@pytest.mark.process
def test_the_plugin_api_keeps_its_paths() -> None:
    """Handler packages import from tasks.handlers, tasks.events, tasks.db and tasks.testing as before;
    the re-exports are the kernel's own objects, and the pytest plug-in is still registered."""
    assert {"handles", "RetryableError", "PermanentError", "ALL_EVENTS"} <= set(vars(tasks.handlers))
    for name in tasks.events.__all__:
        assert getattr(tasks.events, name) is getattr(kernel.events, name)
    for name in tasks.db.__all__:
        assert getattr(tasks.db, name) is getattr(kernel.storage.db, name)
    [plugin] = [entry for entry in entry_points(group="pytest11") if entry.name == "auth0_events"]
    assert plugin.value == "tasks.testing"
    assert not {"tasks.celery_app", "tasks.event_task"} & loaded_after("import tasks.handlers, tasks.events")


def test_celery_finds_the_worker_app_in_tasks() -> None:
    """``celery -A tasks`` gets the worker's app: the shared one with its start-up steps and its task."""
    from celery.app.utils import find_app

    from kernel.celery_app import app as shared
    from kernel.wire import TASK_NAME

    app = find_app("tasks")
    assert app is shared
    assert TASK_NAME in app.tasks
    assert {"tasks.bootsteps.CheckDatabaseSchema", "tasks.bootsteps.ReportRoutingGaps"} <= {
        f"{step.__module__}.{step.__name__}" for step in app.steps["worker"]
    }


@pytest.mark.parametrize("module", ["celeryconfig.py", "flowerconfig.py", "gunicorn.conf.py"])
def test_the_process_configurations_import_only_the_kernel(module: str) -> None:
    """celeryconfig.py, flowerconfig.py and gunicorn.conf.py are modules, out of import-linter's reach:
    of this project's packages they import only the kernel, as every process reads them."""
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    ours = {name for name in imported if name.split(".")[0] in OUR_PACKAGES}
    assert ours, f"{module} imports nothing of the project"
    assert {name.split(".")[0] for name in ours} == {"kernel"}, ours


def test_the_image_copies_every_package() -> None:
    """The Dockerfile copies each package pyproject.toml installs (app, tasks, cli, kernel)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [
        pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    assert sorted(packages) == sorted(OUR_PACKAGES)
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile, package
