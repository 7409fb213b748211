"""Group commit: the ledger writes of events running at once in one worker share a transaction and its fsync.

A task's ledger write (its attempt and claims, or its done mark) is a function of a connection. ``run``
queues it and returns its result once a transaction holding it has committed, or raises its error. The
first caller to find no transaction in progress leads: it takes every write queued by then, runs them in
one transaction and commits; writes queued meanwhile wait for the next leader, the first of them, which
the outgoing leader wakes. So a lone task (a prefork child, the tests' embedded worker) commits alone at
once, with no thread hand-off, and N tasks arriving together pay one commit (one fsync on SQLite, one WAL
flush on PostgreSQL) instead of N. No write waits for a timer.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from kernel.settings import get_settings
from kernel.storage.db import get_engine

T = TypeVar("T")

#: Connection.info key holding how many writes the transaction in progress carries (tests and logs read it).
GROUP_SIZE_KEY = "auth0_events_group_size"


@dataclass
class _Write(Generic[T]):
    """One caller's write, and what became of it."""

    work: Callable[[Connection], T]
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

    def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(connection)`` in a transaction shared with concurrent callers; return once committed."""
        write: _Write[T] = _Write(work)
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
            with get_engine(self.url).connect() as connection:
                connection.info[GROUP_SIZE_KEY] = len(batch)
                try:
                    with connection.begin():
                        for write in batch:
                            try:
                                write.value = write.work(connection)
                            except Exception:
                                failed = True
                                raise
                finally:
                    connection.info.pop(GROUP_SIZE_KEY, None)
        except BaseException as exc:  # noqa: BLE001 - handed to each caller, who raises it
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


_groups: dict[tuple[str, int], GroupCommit] = {}
_groups_lock = threading.Lock()


def group_for(url: str | None = None) -> GroupCommit:
    """This process's group commit for ``url`` (DATABASE_URL by default); a forked child gets its own."""
    url = url or get_settings().database_url
    key = (url, os.getpid())
    with _groups_lock:
        if key not in _groups:
            _groups[key] = GroupCommit(url)
        return _groups[key]


def commit_together(work: Callable[[Connection], T], url: str | None = None) -> T:
    """Run ``work(connection)`` in a transaction shared with this process's concurrent ledger writes."""
    return group_for(url).run(work)
