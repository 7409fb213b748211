"""The tenant's logs from ``GET /api/v2/logs``: checkpoint pages (``from``/``take``), date searches.

Pages come from ``GET /api/v2/logs?from=<log_id>&take=<n>``, each next one from the ``Link: <…>;
rel="next"`` URL, until an empty page (Auth0 orders checkpoint reads by log_id). auth0-python 6.8's
``logs.list`` cannot read checkpoint responses (it raises ParsingError on the bare JSON array a
checkpoint page is), so these are plain requests through ManagementApi.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from cli.management.api import BackfillError, ManagementApi, Need, scope_hint, short_target

LOGS_PATH = "/api/v2/logs"
MAX_TAKE = 100  # "retrieve up to 100 logs per request"
READ_LOGS = Need("to list logs", scope_hint("read:logs"))

Log = dict[str, Any]


@dataclass(frozen=True)
class Checkpoint:
    """The last log of a confirmed page: the next run reads the logs after it."""

    log_id: str
    date: datetime | None


class LogsClient(ManagementApi):
    """Reads the tenant's logs: by checkpoint (following Link rel="next") and by date search."""

    def pages(self, after_log_id: str, take: int = MAX_TAKE, stop_short: bool = False) -> Iterator[list[Log]]:
        """Yield pages of logs after ``after_log_id`` in log_id order; the last one yielded is empty.

        ``stop_short``: a page with fewer than ``take`` logs is the last (then followed by an empty one
        without asking Auth0 again), which saves the watcher a request per pass.
        """
        url = checkpoint_url(self.credentials.base_url, after_log_id, take)
        while True:
            response = self.get(url, READ_LOGS)
            logs = log_list(response, url)
            yield logs
            if not logs:
                return
            if stop_short and len(logs) < take:
                yield []
                return
            url = self._next_url(response, logs, take)

    def first_since(self, since: datetime) -> Log | None:
        """The oldest log dated at or after ``since`` (a search, sort=date:1, per_page=1), or None."""
        return self._one({"q": f"date:[{iso_millis(since)} TO *]", "sort": "date:1"})

    def newest(self) -> Log | None:
        """The newest log the tenant has (a search, sort=date:-1, per_page=1), or None when it has none."""
        return self._one({"sort": "date:-1"})

    def _one(self, params: dict[str, str]) -> Log | None:
        params = {**params, "per_page": "1", "page": "0", "include_totals": "false"}
        url = str(httpx.URL(self.credentials.base_url + LOGS_PATH, params=params))
        logs = log_list(self.get(url, READ_LOGS), url)
        return logs[0] if logs else None

    def _next_url(self, response: httpx.Response, logs: list[Log], take: int) -> str:
        link = response.links.get("next", {}).get("url")
        last = last_checkpoint(logs)
        if not link and last is not None:
            # Auth0 documents a Link on every page; without one, the last log_id is the same cursor.
            return checkpoint_url(self.credentials.base_url, last.log_id, take)
        if not link:
            raise BackfillError(
                f"GET {short_target(response.url)}: no Link rel=next and no log_id to go on from"
            )
        url = response.url.join(link)
        if (url.scheme, url.host, url.port) != (response.url.scheme, response.url.host, response.url.port):
            raise BackfillError(
                f"Auth0's Link rel=next points at another host ({url.host}); not following it"
            )
        return str(url)


def checkpoint_url(base_url: str, after_log_id: str, take: int) -> str:
    """The first checkpoint request: logs after ``after_log_id``, ``take`` of them (at most 100)."""
    params = {"from": after_log_id, "take": str(min(max(take, 1), MAX_TAKE))}
    return str(httpx.URL(base_url + LOGS_PATH, params=params))


def iso_millis(moment: datetime) -> str:
    """``2026-11-20T00:00:00.000Z``: the date format Auth0 writes in its logs."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def log_list(response: httpx.Response, url: str) -> list[Log]:
    """The logs of an answer: a JSON array, or the ``logs`` of a search with include_totals."""
    try:
        body = response.json()
    except ValueError as exc:
        raise BackfillError(f"GET {short_target(url)}: Auth0 answered something that is not JSON") from exc
    if isinstance(body, dict) and isinstance(body.get("logs"), list):  # search with include_totals
        body = body["logs"]
    if not isinstance(body, list):
        raise BackfillError(
            f"GET {short_target(url)}: expected a JSON array of logs, got {type(body).__name__}"
        )
    return body


def last_checkpoint(logs: list[Log]) -> Checkpoint | None:
    """The checkpoint after ``logs``: its last log that has a log_id (pages are in log_id order)."""
    for log in reversed(logs):
        log_id = log_id_of(log)
        if log_id is not None:
            return Checkpoint(log_id, log_date(log))
    return None


def log_id_of(log: object) -> str | None:
    """The log_id of a bare Management API entry (or a stream envelope), if it has one."""
    if not isinstance(log, dict):
        return None
    value = log.get("log_id")
    return value if isinstance(value, str) and value else None


def log_date(log: object) -> datetime | None:
    """The ``date`` of a bare entry or an envelope's data, timezone-aware, if it parses."""
    if not isinstance(log, dict):
        return None
    data = log.get("data")
    value = (data if isinstance(data, dict) else log).get("date")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
