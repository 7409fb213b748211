"""Each benchmark of bench/ runs once with --quick, so none can rot: it prints the machine, writes its JSON.

The figures of a --quick run mean little (seconds of traffic on a shared machine) and are not asserted; the
full runs and their figures are in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

# What the test environment (tests/conftest.py) sets for the tests' own vhost and handlers: a benchmark
# chooses its own vhost, routes and database, and measures the default handlers, not the test plug-ins.
_TEST_VARIABLES = ("BROKER_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")


def _environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name not in _TEST_VARIABLES and not (name.startswith("AUTH0_") and "_TEST_" not in name)
    }


@pytest.mark.bench
@pytest.mark.worker  # each benchmark starts its own workers (and receivers) on a vhost of its own
@pytest.mark.parametrize("name", ["ingest", "end_to_end", "memory", "confirms"])
def test_quick_run_prints_the_machine_and_writes_its_json(name: str, tmp_path: Path) -> None:
    """``python -m bench.<name> --quick`` exits 0, names the machine and versions, and writes its figures."""
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    for label in ("cores:", "RAM:", "Python:", "RabbitMQ: RabbitMQ 3.", "Celery: 5."):
        assert label in result.stdout, f"{label!r} missing from:\n{result.stdout[:2000]}"
    assert "target " in result.stdout
    path = tmp_path / f"{name}-quick.json"
    assert f"results: {path}" in result.stdout
    figures = json.loads(path.read_text(encoding="utf-8"))
    assert figures["benchmark"] == name
    assert figures["machine"]["cores"] == os.cpu_count()
    assert figures["machine"]["rabbitmq"].startswith("RabbitMQ ")
    assert figures["machine"]["versions"]["celery"].startswith("5.")
    assert figures["targets"]
    assert all(isinstance(met, bool) for met in figures["targets"].values())


def test_results_directory_is_ignored_by_git() -> None:
    """The figures a run writes under bench/results/ are not committed by accident."""
    assert "bench/results/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_memory_warm_up_lasts_until_the_task_time_limit_has_passed() -> None:
    """The growth window starts once the first tasks' time-limit timers are due, or at 20% if later."""
    from bench.memory import warm_up_end

    # 100 events per second, the first processed at t=3; the time limit is 300 s.
    samples = [{"t": float(t), "processed": max(0, (t - 2) * 100)} for t in range(0, 600)]
    assert warm_up_end(samples, events=59_000, time_limit=300) == 30_100
    assert warm_up_end(samples, events=200_000, time_limit=30) == 40_000  # 20% is later
    # A soak too short to leave a window after the limit keeps the 20% (and says little about growth).
    assert warm_up_end(samples, events=30_000, time_limit=300) == 6_000
    assert warm_up_end([{"t": 0.0, "processed": 0}], events=1_000, time_limit=300) == 200
