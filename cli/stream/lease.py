"""The watchers' lease in the database: one watcher acts at a time, another takes over once it expires.

A conditional UPDATE (the holder is me, or the lease expired) is atomic on SQLite and PostgreSQL alike,
so two watchers asking at once cannot both get it; no advisory lock of one database is needed.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, or_, update
from sqlalchemy.dialects import postgresql, sqlite

from cli.management.api import BackfillError
from cli.management.fill import database_errors
from kernel.storage.db import transaction
from kernel.storage.models import WatcherLease, fit, utcnow

LEASES = cast(Table, WatcherLease.__table__)
NAME = "stream-watch"


class LeaseLost(BackfillError):
    """Raised when the watcher's lease expired and another watcher took it, in the middle of a pass."""


def holder_name() -> str:
    """``host:pid:random``: who holds the lease, unique per process, readable in the table."""
    return fit(LEASES.c.holder, f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")


class Lease:
    """The lease NAME in DATABASE_URL, taken and renewed for ``seconds`` by ``holder``."""

    def __init__(self, database_url: str, seconds: float, holder: str | None = None) -> None:
        self.database_url = database_url
        self.seconds = seconds
        self.holder = holder or holder_name()

    def acquire(self, now: datetime | None = None) -> bool:
        """Take or renew the lease; False when another watcher holds one that has not expired."""
        now = now or utcnow()
        values = {
            "holder": self.holder,
            "expires_at": now + timedelta(seconds=self.seconds),
            "updated_at": now,
        }
        with (
            database_errors("taking the watcher lease", self.database_url),
            transaction(self.database_url) as connection,
        ):
            insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
            connection.execute(insert(LEASES).values(name=NAME, **values).on_conflict_do_nothing())
            taken = connection.execute(
                update(LEASES)
                .where(LEASES.c.name == NAME, or_(LEASES.c.holder == self.holder, LEASES.c.expires_at < now))
                .values(**values)
            )
            return taken.rowcount == 1

    def renew(self) -> None:
        """Renew the lease in the middle of a pass; raises LeaseLost when another watcher has it now."""
        if not self.acquire():
            raise LeaseLost(
                "the watcher lease expired and another watcher took it (AUTH0_EVENTS_WATCH_LEASE is shorter "
                "than a pass): stopping this pass, the checkpoint stays at the last confirmed page"
            )

    def release(self) -> None:
        """Let the lease go at once (a clean stop), so another watcher need not wait for it to expire."""
        now = utcnow()
        with (
            database_errors("releasing the watcher lease", self.database_url),
            transaction(self.database_url) as connection,
        ):
            connection.execute(
                update(LEASES)
                .where(LEASES.c.name == NAME, LEASES.c.holder == self.holder)
                .values(expires_at=now, updated_at=now)
            )
