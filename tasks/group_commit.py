"""Group commit: the ledger writes of events running at once in one worker share a transaction and its fsync.

A task's ledger write (its attempt and claims, or its done mark) is a function of a connection. ``run``
queues it and returns its result once a transaction holding it has committed, or raises its error. The
first caller to find no transaction in progress leads: it takes every write queued by then, runs them in
one transaction and commits; writes queued meanwhile wait for the next leader, the first of them, which
the outgoing leader wakes. So a lone task (a prefork child, the tests' embedded worker) commits alone at
once, with no thread hand-off, and N tasks arriving together pay one commit (one fsync on SQLite, one WAL
flush on PostgreSQL) instead of N. No write waits for a timer.

A write may also come as data (a ``Bulk`` item, the ledger's attempts and done marks): the leader then runs
the items of one kind together, in a few multi-row statements for the whole batch instead of a few
statements for each of them (BENCHMARKS.md: the statements were most of a worker's ledger cost). An item
whose key (its event's log_id) another bulk item of the batch already has runs on its own after them, as
does every write that is not a Bulk item, so no statement carries one event twice.

The promises are those of separate transactions: each write's caller returns only after its own write
committed (so a claim is durable before the handler's effect, a done mark before the message is acked),
and a write's failure is its own. When a write raises inside the shared transaction, the transaction is
rolled back and every write of the batch runs again in a transaction of its own (the failing one then
fails alone, with its own error); a failed BEGIN or COMMIT fails every write of the batch, as it would have
failed each of them alone (the tasks retry). A process killed mid-batch leaves either the whole batch
committed or none of it, and no message of the batch acked.

Hand-written: SQLAlchemy and the drivers commit per connection, and PostgreSQL's own commit_delay needs a
superuser and many sessions; nothing shares one transaction between threads' units of work.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from kernel.settings import get_settings
from kernel.storage.db import PING_IDLE_SECONDS, get_engine, on_dispose

T = TypeVar("T")

#: Connection.info key holding how many writes the transaction in progress carries (tests and logs read it).
GROUP_SIZE_KEY = "auth0_events_group_size"


class Bulk:
    """A write given as data, which the leader may run together with others of its kind.

    Subclasses are dataclasses naming the event (``key``) and implement ``run_many``; ``run`` runs one
    item alone, which must have the same effect and result as running it in ``run_many``.
    """

    @property
    def key(self) -> str:
        """The log_id of the event the item writes; no multi-row statement holds one twice."""
        raise NotImplementedError

    def run(self, connection: Connection) -> Any:
        """Write this item alone in the transaction of ``connection``; return its result."""
        return self.run_many(connection, [self])[0]

    @classmethod
    def run_many(cls, connection: Connection, items: list[Any]) -> list[Any]:
        """Write ``items`` (distinct keys, sorted by key) together; return their results in that order."""
        raise NotImplementedError


@dataclass
class _Write(Generic[T]):
    """One caller's write, and what became of it."""

    work: Callable[[Connection], T]
    bulk: Bulk | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    value: Any = None
    error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[no-any-return]


class GroupCommit:
    """The group commit of one database in one process (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._queued: list[_Write[Any]] = []
        self._busy = False
        #: Batches committed and writes they carried, for the logs and the tests.
        self.batches = 0
        self.writes = 0
        # Kept from one batch to the next: only the leader uses it, one leader at a time.
        self._connection: Connection | None = None
        self._used_at = 0.0

    def run(self, work: Callable[[Connection], T] | Bulk) -> T:
        """Run ``work(connection)`` (or a Bulk item) in a transaction shared with concurrent callers; return
        its result once committed."""
        write: _Write[T] = _Write(work.run, work) if isinstance(work, Bulk) else _Write(work)
        with self._lock:
            self._queued.append(write)
            if not self._busy:
                self._busy = True
                write.lead = True
        if not write.lead:
            write.ready.wait()
            if not write.lead:
                return write.outcome()
        self._lead()
        return write.outcome()

    def _lead(self) -> None:
        with self._lock:
            batch, self._queued = self._queued, []
        try:
            self._commit(batch)
        finally:
            with self._lock:
                following = self._queued[0] if self._queued else None
                if following is None:
                    self._busy = False
                else:
                    following.lead = True
            for write in batch:
                if not write.lead:
                    write.ready.set()
            if following is not None:
                following.ready.set()

    def _commit(self, batch: list[_Write[Any]]) -> None:
        failed = False
        try:
            connection = self._connect()
            connection.info[GROUP_SIZE_KEY] = len(batch)
            try:
                with connection.begin():
                    try:
                        _write_all(connection, batch)
                    except Exception:
                        failed = True
                        raise
            finally:
                self._used_at = time.monotonic()
                if not (connection.closed or connection.invalidated):  # info would reconnect
                    connection.info.pop(GROUP_SIZE_KEY, None)
        except BaseException as exc:  # noqa: BLE001 - handed to each caller, who raises it
            self._release()
            if failed and len(batch) > 1:
                for write in batch:
                    write.value, write.error = None, None
                    self._commit([write])
                return
            for write in batch:
                write.value, write.error = None, exc
            if not isinstance(exc, Exception):
                raise
            return
        self.batches += 1
        self.writes += len(batch)

    def _connect(self) -> Connection:
        """The connection kept from the last batch, or a new one from the pool.

        Kept because a pool checkout and return for each batch was ~4 % of a threads worker's CPU. Pinged
        first when idle for over PING_IDLE_SECONDS, as the pool pings a connection idle that long (one the
        database ended meanwhile is dropped, and a fresh one taken); given back when the process's engine
        was replaced, and after any failure.
        """
        engine = get_engine(self.url)
        held = self._connection
        if held is not None and (
            held.engine is not engine
            or (time.monotonic() - self._used_at > PING_IDLE_SECONDS and not _answers(held))
        ):
            self._release()
        if self._connection is None:
            self._connection = engine.connect()
        return self._connection

    def release_idle(self) -> None:
        """Give the kept connection back now, unless a batch is using it."""
        with self._lock:
            if not self._busy:
                self._release()

    def _release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - a connection that cannot even close is dropped all the same
                connection.invalidate()


def _answers(connection: Connection) -> bool:
    """Whether the database still answers on ``connection`` (a failed ping also invalidates it)."""
    try:
        connection.exec_driver_sql("SELECT 1")
        connection.rollback()
    except Exception:  # noqa: BLE001 - whatever the failure, the connection is not used again
        return False
    return True


def _write_all(connection: Connection, batch: list[_Write[Any]]) -> None:
    """Run the batch's writes in the transaction of ``connection``: Bulk items by kind, then the rest."""
    kinds: dict[type[Bulk], list[_Write[Any]]] = {}
    alone: list[_Write[Any]] = []
    keys: set[str] = set()
    for write in batch:
        item = write.bulk
        if item is None or item.key in keys:
            alone.append(write)
            continue
        keys.add(item.key)
        kinds.setdefault(type(item), []).append(write)
    for kind, writes in kinds.items():
        # One order of keys in every transaction: PostgreSQL locks the events' rows in it.
        writes.sort(key=lambda write: write.bulk.key)  # type: ignore[union-attr]
        values = kind.run_many(connection, [write.bulk for write in writes])
        for write, value in zip(writes, values, strict=True):
            write.value = value
    for write in alone:
        write.value = write.work(connection)


_groups: dict[tuple[str, int], GroupCommit] = {}
_groups_lock = threading.Lock()


def _release_all() -> None:
    with _groups_lock:
        groups = list(_groups.values())
    for group in groups:
        group.release_idle()


on_dispose(_release_all)


def group_for(url: str | None = None) -> GroupCommit:
    """This process's group commit for ``url`` (DATABASE_URL by default); a forked child gets its own."""
    url = url or get_settings().database_url
    key = (url, os.getpid())
    with _groups_lock:
        if key not in _groups:
            _groups[key] = GroupCommit(url)
        return _groups[key]


def commit_together(work: Callable[[Connection], T] | Bulk, url: str | None = None) -> T:
    """Run ``work(connection)`` (or a Bulk item) in a transaction shared with this process's concurrent
    ledger writes; return its result once committed."""
    return group_for(url).run(work)
