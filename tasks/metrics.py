"""Worker metrics: task and handler outcomes, handler durations and end-to-end lag, by event type.

Pool children count, in prometheus-client's multiprocess mode: each child writes files of its own, so
the counts of a child killed with SIGKILL stay. The node's main process adds them up and serves them at
``http://<host>:$AUTH0_EVENTS_METRICS_PORT/metrics``, set up by ``serve`` (the ``celeryd_after_setup``
signal, tasks/celery_app.py) before the pool forks. A node's files live in
``$PROMETHEUS_MULTIPROC_DIR/worker-<node name>``, emptied when the node starts; without the variable,
in a private temporary directory removed at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from kernel.events import Auth0Event
from kernel.metrics import DIR_VARIABLE, event_type_label
from kernel.settings import get_settings

if TYPE_CHECKING:
    from tasks.process import Outcome

logger = logging.getLogger(__name__)

TaskOutcome = Literal["succeeded", "retried", "dead_lettered"]

#: The worker's metric objects. What a node serves comes from the children's files, not from here;
#: tests list the metric names from it.
REGISTRY = CollectorRegistry(auto_describe=True)

TASKS = Counter(
    "auth0_events_tasks_total",
    "Event task attempts by how they ended: succeeded, retried (a retry is scheduled) or dead_lettered.",
    ["event_type", "outcome"],
    registry=REGISTRY,
)
HANDLER_RUNS = Counter(
    "auth0_events_handler_runs_total",
    "Handlers by outcome: succeeded, failed, skipped_duplicate (the ledger says an earlier delivery did "
    "it) or skipped_in_progress (another delivery of the event is running it).",
    ["event_type", "handler", "outcome"],
    registry=REGISTRY,
)
HANDLER_DURATION = Histogram(
    "auth0_events_handler_duration_seconds",
    "Time one handler run took, failed runs included.",
    ["event_type", "handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
BREACHED_PASSWORD_EVENTS = Counter(
    "auth0_events_breached_password_events_total",
    "Breached-password events the blocking action handled, by outcome: blocked (one or more users) or "
    "nothing_to_block (no user has the event's address).",
    ["event_type", "outcome"],
    registry=REGISTRY,
)
EVENT_LAG = Histogram(
    "auth0_events_event_lag_seconds",
    "From the event's date at Auth0 to the end of its handlers (observed once, by the attempt that ran "
    "its last handlers; events without a date are not observed).",
    ["event_type"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
    registry=REGISTRY,
)


def count_task(event_type: str, outcome: TaskOutcome) -> None:
    """Count one task attempt that ended as ``outcome``."""
    TASKS.labels(event_type_label(event_type), outcome).inc()


@contextmanager
def timed_handler(event_type: str, handler: str) -> Iterator[None]:
    """Time one handler run and count it as succeeded, or failed when it raises."""
    label = event_type_label(event_type)
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        HANDLER_RUNS.labels(label, handler, "failed").inc()
        raise
    else:
        HANDLER_RUNS.labels(label, handler, "succeeded").inc()
    finally:
        HANDLER_DURATION.labels(label, handler).observe(time.perf_counter() - started)


def count_skip(event_type: str, handler: str, claim: str) -> None:
    """Count a handler the ledger skipped: ``done`` by an earlier delivery, or ``owned`` by a running one.

    A claim of ``run`` is counted by ``timed_handler``.
    """
    outcome = {"done": "skipped_duplicate", "owned": "skipped_in_progress"}.get(claim)
    if outcome is not None:
        HANDLER_RUNS.labels(event_type_label(event_type), handler, outcome).inc()


def observe_lag(event: Auth0Event, outcome: Outcome) -> None:
    """Observe the event's lag once its handlers are done, unless this attempt ran none of them."""
    if event.date is None or (not outcome.ran and (outcome.skipped or outcome.owned_elsewhere)):
        return
    date = event.date if event.date.tzinfo else event.date.replace(tzinfo=UTC)
    EVENT_LAG.labels(event_type_label(event.type)).observe(
        max(0.0, (datetime.now(UTC) - date).total_seconds())
    )


def serve(sender: Any = None, **_: Any) -> None:
    """celeryd_after_setup: serve the node's metrics on AUTH0_EVENTS_METRICS_PORT, if set.

    Runs in the node's main process before the pool forks, so the children inherit the multiprocess
    mode and the directory. A port that cannot be bound is logged and the worker runs on without metrics.
    """
    port = get_settings().metrics_port
    if port is None:
        return
    directory = _node_directory(str(sender or os.getpid()))
    os.environ[DIR_VARIABLE] = str(directory)  # where the children write, and mark_process_dead looks
    if not values.ValueClass._multiprocess:
        # prometheus-client picks its mode when first imported, and `celery` imports it (through Flower's
        # command) before this app; every metric value made from now on is file-backed. The worker's
        # metrics all have labels, so none has a value yet. (prometheus-client's tests swap it likewise.)
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    try:
        start_http_server(port, registry=registry)
    except OSError as exc:
        logger.error("cannot serve worker metrics on port %d (AUTH0_EVENTS_METRICS_PORT): %s", port, exc)
        return
    logger.info(
        "serving worker metrics of %s at http://0.0.0.0:%d/metrics (files in %s)", sender, port, directory
    )


def _node_directory(node: str) -> Path:
    """Make the node's directory and delete files an earlier run of the node left there."""
    base = os.environ.get(DIR_VARIABLE, "").strip()
    if not base:
        base = tempfile.mkdtemp(prefix="auth0-events-worker-metrics-")
        atexit.register(_remove_private_dir, base, os.getpid())
    directory = Path(base) / ("worker-" + re.sub(r"[^A-Za-z0-9@._-]", "_", node))
    directory.mkdir(parents=True, exist_ok=True)
    # Counters would resume from an earlier run's values instead of starting at zero like a new process.
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    return directory


def _remove_private_dir(path: str, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked child that happens to run atexit handlers
        shutil.rmtree(path, ignore_errors=True)


def child_exited(pid: int | None = None, **_: Any) -> None:
    """worker_process_shutdown: let the node's directory know that the pool child ``pid`` is gone."""
    directory = os.environ.get(DIR_VARIABLE)
    if pid is not None and directory and get_settings().metrics_port is not None:
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
