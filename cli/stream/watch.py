"""One pass of the stream watch: the lease, the streams' status, the gap filled, a stopped stream resumed.

The gap is found by walking the tenant's logs forward by checkpoint (``from``/``take``) up to the grace
(AUTH0_EVENTS_WATCH_GRACE before now): each page goes through the backfill's run (cli/management/fill.py),
which publishes, confirmed, the routed logs the ledger never received (tagged ``backfill``) and only
then saves the checkpoint. A watcher killed in the middle leaves the checkpoint at its last confirmed
page; the next one (once the lease expires) walks on from there, and the ledger skips what was published.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

from cli.management.api import AccessDenied, Auth0Unavailable, BackfillError, ServiceUnavailable
from cli.management.fill import CheckpointStore, Limits, Publisher, Start, Summary, log_pages, run_backfill
from cli.management.logs import MAX_TAKE, Checkpoint, LogsClient, log_date, log_id_of
from cli.stream import metrics
from cli.stream.health import Health, last_delivered, oldest_log_id, our_streams
from cli.stream.lease import Lease, LeaseLost
from cli.stream.streams import Stream, StreamsClient
from kernel.routing import RouteTable
from kernel.storage.models import utcnow

logger = logging.getLogger(__name__)

READYZ_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class WatchOptions:
    """The watch's settings (AUTH0_EVENTS_STREAM_ID, AUTH0_EVENTS_WATCH_*)."""

    stream_id: str = ""
    grace: float = 300.0
    resume: bool = False
    readyz_url: str = "http://127.0.0.1:8000/readyz"
    take: int = MAX_TAKE


@dataclass
class PassReport:
    """What one pass did, for its log line and `stream watch --once --json`."""

    outcome: metrics.PassOutcome = "ok"
    leader: bool = False
    health: Health | None = None
    started_from: str | None = None
    summary: Summary | None = None
    resumes: dict[str, metrics.ResumeOutcome] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready values."""
        return {
            "outcome": self.outcome,
            "leader": self.leader,
            "streams": [] if self.health is None else [s.as_dict() for s in self.health.streams],
            "started_from": self.started_from,
            "fill": None if self.summary is None else self.summary.as_dict(),
            "resumes": self.resumes,
            "problems": self.problems,
        }


def receiver_ready(url: str) -> Callable[[], str | None]:
    """A check of the receiver's /readyz: None when it answers 200, else why not."""

    def check() -> str | None:
        try:
            response = httpx.get(url, timeout=READYZ_TIMEOUT_SECONDS, follow_redirects=False)
        except httpx.HTTPError as exc:
            return f"{url}: {type(exc).__name__}"
        return None if response.status_code == 200 else f"{url} answered HTTP {response.status_code}"

    return check


class Watcher:
    """Runs passes; holds what lasts between them (the first pass's --since, the clients, the lease)."""

    def __init__(
        self,
        options: WatchOptions,
        streams: StreamsClient,
        logs: LogsClient,
        publisher: Publisher,
        store: CheckpointStore,
        lease: Lease,
        routes: RouteTable,
        since: datetime | None = None,
        readyz: Callable[[], str | None] | None = None,
    ) -> None:
        self.options = options
        self.streams = streams
        self.logs = logs
        self.publisher = publisher
        self.store = store
        self.lease = lease
        self.routes = routes
        self._since = since
        self._readyz = readyz or receiver_ready(options.readyz_url)

    def run_pass(self) -> PassReport:
        """One pass; never raises for Auth0, the broker or the database: the report says what failed."""
        report = PassReport()
        try:
            self._pass(report)
        except Auth0Unavailable as exc:
            metrics.AUTH0_UP.set(0)
            report.outcome = "auth0_unavailable"
            report.problems.append(f"Auth0 unreachable: {exc}")
        except ServiceUnavailable as exc:
            report.outcome = "unavailable"
            report.problems.append(str(exc))
        except LeaseLost as exc:  # another watcher acts now; the checkpoint is at the last confirmed page
            metrics.LEADER.set(0)
            report.outcome = "standby"
            report.problems.append(str(exc))
        except BackfillError as exc:
            report.outcome = "refused"
            report.problems.append(str(exc))
        metrics.count_pass(report.outcome, time.time())
        _log(report)
        return report

    def _pass(self, report: PassReport) -> None:
        report.leader = self.lease.acquire()
        metrics.LEADER.set(1 if report.leader else 0)
        if not report.leader:
            report.outcome = "standby"
            return
        report.health = self._status(report)
        metrics.AUTH0_UP.set(1)
        self._fill(report)
        if report.health is not None:
            self._resume(report, report.health.ours)

    def _status(self, report: PassReport) -> Health | None:
        health = Health(last_received=last_delivered(self.store.database_url))
        try:
            health.streams = our_streams(self.streams, self.options.stream_id)
        except AccessDenied as exc:  # no read:log_streams: the gap is still filled
            report.problems.append(str(exc))
            report.outcome = "refused"
            metrics.show_health(health)
            return None
        metrics.show_health(health)
        if not health.ours:
            report.problems.append(_no_stream_message(self.options.stream_id, len(health.streams)))
        for stream in health.ours:
            if not stream.active:
                report.problems.append(f"log stream {stream.id} ({stream.name!r}) is {stream.status}")
        return health

    def _fill(self, report: PassReport) -> None:
        start = self._start()
        report.started_from = start.after_log_id or (start.since.isoformat() if start.since else None)
        until = utcnow() - timedelta(seconds=self.options.grace)
        summary = run_backfill(
            log_pages(self.logs, start, self.options.take, stop_short=True),
            self.routes,
            self.publisher,
            self.store,
            Limits(until=until, stop_short=True),
            on_page=lambda _summary: self.lease.renew(),
            run_id=f"watch-{uuid.uuid4().hex[:8]}",
            after_log_id=start.after_log_id,
        )
        self._since = None  # --since is where the first pass starts; later ones go on by checkpoint
        report.summary = summary
        gap = summary.published + summary.quarantined
        metrics.GAP_LOGS.set(gap)
        metrics.GAP_FILLED.inc(gap)

    def _start(self) -> Start:
        """--since on the first pass, else the checkpoint, else the oldest event of the ledger, else now."""
        if self._since is not None:
            return Start(since=self._since)
        saved = self.store.load()
        if saved is not None:
            return Start(after_log_id=saved.log_id)
        oldest = oldest_log_id(self.store.database_url)
        if oldest is not None:
            return Start(after_log_id=oldest)
        # Nothing received and nothing to start from: watch from Auth0's newest log on, saved at once so
        # that the next pass goes on from there rather than from the newest log of its own time.
        newest = self.logs.newest()
        newest_id = log_id_of(newest)
        if newest_id is None:
            return Start(since=utcnow())
        self.store.save(Checkpoint(newest_id, log_date(newest)))
        return Start(after_log_id=newest_id)

    def _resume(self, report: PassReport, ours: list[Stream]) -> None:
        for stream in ours:
            if stream.status not in ("paused", "suspended"):
                continue
            outcome = self._resume_one(stream)
            report.resumes[stream.id] = outcome
            metrics.RESUMES.labels(outcome).inc()

    def _resume_one(self, stream: Stream) -> metrics.ResumeOutcome:
        if not self.options.resume:
            logger.warning(
                "log stream %s is %s: not re-activating it (AUTH0_EVENTS_WATCH_RESUME is off); the watcher "
                "fills the gap by polling the Management API",
                stream.id,
                stream.status,
            )
            return "disabled"
        not_ready = self._readyz()
        if not_ready is not None:
            logger.warning(
                "log stream %s is %s: not re-activating it, the receiver is not ready (%s)",
                stream.id,
                stream.status,
                not_ready,
            )
            return "receiver_not_ready"
        logger.warning(
            "log stream %s is %s: re-activating it (PATCH status active)", stream.id, stream.status
        )
        try:
            answered = self.streams.activate(stream.id)
        except BackfillError as exc:
            logger.error("re-activating log stream %s failed: %s", stream.id, exc)
            return "failed"
        if not answered.active:
            logger.error("re-activating log stream %s: Auth0 answered status %s", stream.id, answered.status)
            return "failed"
        logger.info("log stream %s is active again", stream.id)
        return "activated"


def _no_stream_message(stream_id: str, count: int) -> str:
    if stream_id:
        return f"no log stream of the tenant has the id AUTH0_EVENTS_STREAM_ID={stream_id} ({count} streams)"
    return f"none of the tenant's {count} log streams is an http stream to /webhooks/auth0"


def _log(report: PassReport) -> None:
    summary = report.summary
    filled = 0 if summary is None else summary.published + summary.quarantined
    read = 0 if summary is None else summary.logs_read
    extra = {"outcome": report.outcome, "gap_filled": filled, "logs_read": read}
    if report.outcome == "standby":
        logger.info("stream watch: another watcher holds the lease; standing by", extra=extra)
        return
    for problem in report.problems:
        logger.warning("stream watch: %s", problem, extra=extra)
    logger.info("stream watch pass %s: %d logs read, %d filled", report.outcome, read, filled, extra=extra)
