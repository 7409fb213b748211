"""gunicorn settings of the receiver: the Procfile's web line runs `gunicorn --config gunicorn.conf.py …`.

Prometheus multiprocess mode (app/metrics.py): every gunicorn worker writes its metrics to files in
PROMETHEUS_MULTIPROC_DIR and GET /metrics adds them up, whichever worker answers. Without the variable,
a private temporary directory is made here, in the master before any worker starts, and removed at exit.
Give each receiver instance a directory of its own: its files are deleted when it starts.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# gunicorn's default access line without the query string and the referrer (a URL with a query of its
# own), for AUTH0_EVENTS_LOG_MASK_PII: GET /events?user=…&ip=… names a person, percent-encoded.
MASKED_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "-" "%(a)s"'


def _remove(path: str, owner: int) -> None:
    if os.getpid() == owner:  # gunicorn workers are forks of the master: only the master removes it
        shutil.rmtree(path, ignore_errors=True)


def _metrics_directory() -> Path:
    configured = os.environ.get(DIR_VARIABLE, "").strip()
    if configured:
        return Path(configured)
    private = tempfile.mkdtemp(prefix="auth0-events-web-metrics-")
    os.environ[DIR_VARIABLE] = private  # read again on a reload (SIGHUP), which keeps the same directory
    atexit.register(_remove, private, os.getpid())
    return Path(private)


metrics_directory = _metrics_directory()


def on_starting(server: Any) -> None:
    """Delete files of an earlier run, which would make counters resume instead of starting at zero."""
    metrics_directory.mkdir(parents=True, exist_ok=True)
    for stale in metrics_directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """Drop the live gauges of a worker that exited; its counters stay in the sum."""
    from prometheus_client import multiprocess  # after PROMETHEUS_MULTIPROC_DIR is set

    multiprocess.mark_process_dead(worker.pid, str(metrics_directory))  # type: ignore[no-untyped-call]


def post_fork(server: Any, worker: Any) -> None:
    """JSON (or terminal text) logs in each worker, gunicorn's access and error lines included."""
    import logging

    from kernel.logging_setup import configure_logging
    from kernel.settings import get_settings

    settings = get_settings()
    configure_logging(settings)
    if settings.log_mask_pii:
        worker.cfg.set("access_log_format", MASKED_ACCESS_LOG_FORMAT)
    for name in ("gunicorn.error", "gunicorn.access"):
        # Through the root handler, so they share its format (and its masking of personal data).
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
