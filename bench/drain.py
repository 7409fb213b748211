"""The backlog-drain phase of bench.end_to_end: the Procfile's logins worker empties a queue of ``s`` events.

The receiver queues ``--drain-events`` successful logins (``s``) on auth0.s while no worker runs; then the
Procfile's ``worker_logins`` line starts (``-A bench.bare_celery`` for bare Celery, ``-A tasks`` for ours)
and the clock runs from the first message it takes (the queue's depth first drops, polled every 10 ms)
until the queue is empty, and, for ours, the ledger holds every event as processed. The worker's
WORKER_CONCURRENCY (and so its processes or threads) is the only thing a curve varies.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import load
from bench.common import (
    BENCH_TOKEN,
    BenchError,
    CpuMeter,
    Service,
    broker_pids,
    chunks,
    jsonl,
    stop_all,
    worker_commands,
)

LOGINS = "worker_logins"
QUEUE = "auth0.s"
BATCH = 100
POLL_SECONDS = 0.01


def login_bodies(count: int, seed: int) -> list[bytes]:
    """``count`` realistic successful logins as request bodies of 100 records."""
    from cli.send.samples import SampleGenerator

    generator = SampleGenerator(types=["s"], seed=seed)
    records = [generator.record() for _ in range(count)]
    return [jsonl(batch) for batch in chunks(records, BATCH)]


@dataclass
class DepthWatch:
    """Polls a queue's ready count in a thread: when it first fell below the backlog, when it reached 0."""

    broker_url: str
    queue: str
    backlog: int
    first_taken: float | None = None
    emptied: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> DepthWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        from kombu.connection import Connection

        with Connection(self.broker_url) as connection:
            channel = connection.channel()
            while not self._stop.is_set():
                depth = channel.queue_declare(self.queue, passive=True).message_count
                now = time.monotonic()
                if self.first_taken is None and depth < self.backlog:
                    self.first_taken = now
                if depth == 0 and self.emptied is None:
                    self.emptied = now
                    return
                time.sleep(POLL_SECONDS)


def queue_depth(broker_url: str, queue: str) -> int:
    """Messages ready in ``queue``."""
    from kombu.connection import Connection

    with Connection(broker_url) as connection:
        return int(connection.channel().queue_declare(queue, passive=True).message_count)


def start_logins(
    env: dict[str, str], scratch: Path, app_module: str, label: str, timeout: float = 90.0
) -> Service:
    """Start the Procfile's logins worker line (``-A app_module``); return it once it logged ready."""
    command = worker_commands(app_module, metrics=app_module == "tasks")[LOGINS]
    service = Service(LOGINS, command, env, scratch / f"drain-{label}.log").start()
    deadline = time.monotonic() + timeout
    while " ready." not in service.log_tail(200_000):
        service.check_alive()
        if time.monotonic() > deadline:
            service.stop()
            raise BenchError(f"{LOGINS} was not ready in {timeout:.0f} s:\n{service.log_tail()}")
        time.sleep(0.05)
    return service


def stop_tree(service: Service, timeout: float = 30.0) -> None:
    """Stop the service and wait for every process of its tree: the shell exits before Celery's warm
    shutdown ends, and a worker still shutting down would take messages of the next phase's backlog."""
    pids = tree(service)
    stop_all([service])
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def tree(service: Service) -> list[int]:
    """The service's main process and its children."""
    main, children = service.processes()
    return ([main] if main else []) + children


@dataclass
class Drain:
    """What a drain phase needs: where to post, what, and the broker to watch."""

    base: str
    bodies: list[bytes]
    broker_url: str
    env: dict[str, str]
    scratch: Path
    timeout: float

    @property
    def events(self) -> int:
        """Events in the backlog."""
        return sum(body.count(b"\n") + 1 for body in self.bodies)

    def fill(self) -> None:
        """Queue the backlog through the receiver (no worker consumes auth0.s meanwhile)."""
        result = load.run_load(self.base, self.bodies, BENCH_TOKEN, 4, 600.0, max_requests=len(self.bodies))
        if result["failed"] or result["accepted"] != self.events:
            raise BenchError(f"queueing the backlog failed: {result['first_error']} ({result['statuses']})")
        deadline = time.monotonic() + 30
        while (depth := queue_depth(self.broker_url, QUEUE)) < self.events:
            if time.monotonic() > deadline:
                raise BenchError(f"{QUEUE} holds {depth} messages, not the {self.events} posted")
            time.sleep(0.05)

    def run(
        self,
        label: str,
        app_module: str,
        concurrency: int | None,
        database_url: str | None = None,
        processed: Callable[[], int] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Fill the queue, start the logins worker, time the drain; return the phase's figures."""
        if queue_depth(self.broker_url, QUEUE):
            raise BenchError(f"{QUEUE} is not empty before the drain {label}")
        self.fill()
        env = {**self.env, **(extra_env or {})}
        if concurrency:
            env["WORKER_CONCURRENCY"] = str(concurrency)
        if database_url:
            env["DATABASE_URL"] = database_url
        events = self.events
        with DepthWatch(self.broker_url, QUEUE, events) as watch:
            worker = start_logins(env, self.scratch, app_module, re.sub(r"\W+", "_", label).strip("_"))
            try:
                groups = {"worker": lambda: tree(worker), "rabbitmq": broker_pids}
                with CpuMeter(groups) as meter:
                    deadline = time.monotonic() + self.timeout
                    while watch.emptied is None or (processed is not None and processed() < events):
                        worker.check_alive()
                        if time.monotonic() > deadline:
                            raise BenchError(f"the drain {label} did not finish in {self.timeout:.0f} s")
                        time.sleep(POLL_SECONDS if watch.emptied is None else 0.02)
                    finished = time.monotonic()
            finally:
                stop_tree(worker)
        started = watch.first_taken or finished
        seconds = max(finished - started, 1e-3)
        return {
            "phase": label,
            "events": events,
            "worker_concurrency": concurrency or "the Procfile's default",
            "seconds": round(seconds, 3),
            "events_per_s": round(events / seconds, 1),
            "cores_used": meter.shares(),
        }


@contextmanager
def sqlite_ledger(scratch: Path, label: str) -> Iterator[str]:
    """A fresh, migrated SQLite ledger file."""
    from kernel.storage.db import dispose_engines, upgrade

    url = f"sqlite:///{scratch / f'drain-{label}.sqlite3'}"
    upgrade(url)
    try:
        yield url
    finally:
        dispose_engines()


def truncate(url: str) -> None:
    """Empty the ledger's tables between drains on one PostgreSQL database."""
    from sqlalchemy import text

    from kernel.storage.db import dispose_engines, transaction

    with transaction(url) as connection:
        connection.execute(text("TRUNCATE events, handler_runs"))
    dispose_engines()


def processed_counter(url: str) -> Callable[[], int]:
    """A function counting the events the ledger holds as processed."""
    from sqlalchemy import func, select

    from kernel.storage.db import session_scope
    from kernel.storage.models import Event

    query = select(func.count()).select_from(Event).where(Event.state == "processed")

    def count() -> int:
        with session_scope(url, read_only=True) as session:
            return int(session.scalar(query) or 0)

    return count


def median(values: Sequence[float]) -> float:
    """The median (the middle one of three)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
