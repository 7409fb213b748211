"""The test command sets up the Flower browser check's Chromium: scripts/ensure-chromium, run by scripts/test.

Chromium is never uninstalled here: AUTH0_EVENTS_TEST_CHROMIUM (the browser tests/test_flower.py drives)
points at a path that does not exist, and fake `id` and `apt-get` on PATH make the user root or not and
record what would be installed.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.process  # runs scripts/ensure-chromium and a copy of scripts/test

INSTALL = "sudo apt-get install chromium"


def executable(path: Path, text: str) -> Path:
    """Write a shell script at ``path``, executable."""
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_bin(tmp_path: Path, uid: int) -> Path:
    """A directory with `id` answering ``uid`` to -u, and `apt-get` logging its arguments to apt.log and
    creating AUTH0_EVENTS_TEST_CHROMIUM on `install`, as Debian's package creates /usr/bin/chromium."""
    directory = tmp_path / "bin"
    directory.mkdir()
    executable(directory / "id", f'#!/bin/sh\n[ "$1" = -u ] && echo {uid} && exit 0\nexec /usr/bin/id "$@"\n')
    executable(
        directory / "apt-get",
        f'#!/bin/sh\necho "$*" >> {tmp_path / "apt.log"}\n'
        '[ "$1" = install ] && printf "#!/bin/sh\\n" > "$AUTH0_EVENTS_TEST_CHROMIUM" '
        '&& chmod +x "$AUTH0_EVENTS_TEST_CHROMIUM"\nexit 0\n',
    )
    return directory


def run(script: Path, tmp_path: Path, uid: int, chromium: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as user ``uid`` (for `id`), with the Chromium the tests drive at ``chromium``."""
    env = {
        **os.environ,
        "PATH": f"{fake_bin(tmp_path, uid)}:{os.environ['PATH']}",
        "AUTH0_EVENTS_TEST_CHROMIUM": str(chromium),
    }
    return subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)


def apt_calls(tmp_path: Path) -> list[str]:
    """What the fake apt-get was asked to do."""
    log = tmp_path / "apt.log"
    return log.read_text().splitlines() if log.exists() else []


def test_missing_chromium_as_a_user_stops_with_the_install_command(tmp_path: Path) -> None:
    """Not root: exit 1 naming the missing browser and the one command that installs it; nothing installed."""
    missing = tmp_path / "chromium"
    result = run(ROOT / "scripts" / "ensure-chromium", tmp_path, 1000, missing)
    assert result.returncode == 1
    assert f"not found at {missing}" in result.stderr
    assert INSTALL in result.stderr
    assert apt_calls(tmp_path) == []


def test_missing_chromium_as_root_is_installed_with_apt_get(tmp_path: Path) -> None:
    """Root with apt-get: Debian's chromium is installed, non-interactively, and the script succeeds."""
    missing = tmp_path / "chromium"
    result = run(ROOT / "scripts" / "ensure-chromium", tmp_path, 0, missing)
    assert result.returncode == 0, result.stderr
    assert apt_calls(tmp_path) == ["update -q", "install -y -q chromium"]
    assert missing.is_file()


def test_chromium_already_there_is_left_alone(tmp_path: Path) -> None:
    """An executable Chromium: nothing to do, whoever runs it."""
    present = executable(tmp_path / "chromium", "#!/bin/sh\n")
    result = run(ROOT / "scripts" / "ensure-chromium", tmp_path, 1000, present)
    assert result.returncode == 0, result.stderr
    assert apt_calls(tmp_path) == []


def test_the_test_command_stops_before_pytest_when_chromium_is_missing(tmp_path: Path) -> None:
    """scripts/test as a user on a machine without Chromium: it stops with the install command before
    pytest runs (the other set-up steps and pytest are stand-ins here; scripts/test and
    scripts/ensure-chromium are the repository's)."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    (checkout / ".venv" / "bin").mkdir(parents=True)
    for name in ("setup", "ensure-rabbitmq", "ensure-postgres", "ensure-proxy"):
        executable(checkout / "scripts" / name, "#!/bin/sh\nexit 0\n")
    for name in ("test", "ensure-chromium"):
        if (ROOT / "scripts" / name).exists():
            shutil.copy2(ROOT / "scripts" / name, checkout / "scripts" / name)
    ran = tmp_path / "pytest-ran"
    executable(checkout / ".venv" / "bin" / "python", f"#!/bin/sh\ntouch {ran}\n")
    result = run(checkout / "scripts" / "test", tmp_path, 1000, tmp_path / "chromium")
    assert not ran.exists(), "pytest ran without the Chromium its Flower browser check needs"
    assert result.returncode == 1
    assert INSTALL in result.stderr
