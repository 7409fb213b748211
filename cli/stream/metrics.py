"""The stream watch's metrics: stream up, last delivery's age, gaps found and filled, resumes, passes.

One process, so a plain registry served by prometheus-client's own HTTP server on
AUTH0_EVENTS_METRICS_PORT (the Procfile's stream_watch line sets 9105).
"""

from __future__ import annotations

import logging
import math
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from cli.stream.health import Health
from cli.stream.streams import printable

logger = logging.getLogger(__name__)

PassOutcome = Literal["ok", "standby", "auth0_unavailable", "unavailable", "refused"]
ResumeOutcome = Literal["activated", "failed", "receiver_not_ready", "disabled"]

REGISTRY = CollectorRegistry(auto_describe=True)

STREAM_UP = Gauge(
    "auth0_events_stream_up",
    "1 when a log stream that points at this service is active, 0 when paused, suspended or unknown.",
    ["stream", "name"],
    registry=REGISTRY,
)
LAST_RECEIVED_AGE = Gauge(
    "auth0_events_stream_last_received_age_seconds",
    "Seconds since the log stream delivered its last event (NaN before it delivered any).",
    registry=REGISTRY,
)
GAP_LOGS = Gauge(
    "auth0_events_stream_gap_logs",
    "Logs the last pass found that Auth0 has, the routes accept and the ledger never received (filled "
    "in that pass).",
    registry=REGISTRY,
)
GAP_FILLED = Counter(
    "auth0_events_stream_gap_filled_total",
    "Logs the watcher published from the Management API because the stream never delivered them.",
    registry=REGISTRY,
)
RESUMES = Counter(
    "auth0_events_stream_resume_attempts_total",
    "Re-activations of a paused or suspended stream by outcome: activated, failed, receiver_not_ready, "
    "or disabled (AUTH0_EVENTS_WATCH_RESUME is off: alert only).",
    ["outcome"],
    registry=REGISTRY,
)
PASSES = Counter(
    "auth0_events_stream_watch_passes_total",
    "Watch passes by outcome: ok, standby (another watcher holds the lease), auth0_unavailable, "
    "unavailable (broker or database), refused (credentials or scopes).",
    ["outcome"],
    registry=REGISTRY,
)
AUTH0_UP = Gauge(
    "auth0_events_stream_watch_auth0_up",
    "1 when the last pass reached Auth0's Management API, 0 when it could not.",
    registry=REGISTRY,
)
LEADER = Gauge(
    "auth0_events_stream_watch_leader",
    "1 while this watcher holds the lease and acts, 0 on standby.",
    registry=REGISTRY,
)
LAST_PASS = Gauge(
    "auth0_events_stream_watch_last_pass_timestamp_seconds",
    "When this watcher last finished a pass (UNIX time), whatever its outcome.",
    registry=REGISTRY,
)
CONFIGURED = Gauge(
    "auth0_events_stream_watch_configured",
    "1 when the watcher has Management API credentials and watches, 0 when it runs idle without them.",
    registry=REGISTRY,
)
CONFIGURED.set(1)
for outcome in ("ok", "standby", "auth0_unavailable", "unavailable", "refused"):
    PASSES.labels(outcome)
for outcome in ("activated", "failed", "receiver_not_ready", "disabled"):
    RESUMES.labels(outcome)
LAST_RECEIVED_AGE.set(math.nan)


def show_health(health: Health) -> None:
    """Set the stream gauges from a health check: one series per stream that points at us."""
    STREAM_UP.clear()
    for stream in health.ours:
        STREAM_UP.labels(stream.id, printable(stream.name, 64)).set(1 if stream.active else 0)
    last = health.last_received
    if last is not None and last.received_at is not None:
        LAST_RECEIVED_AGE.set(max(0.0, (health.checked_at - last.received_at).total_seconds()))


def count_pass(outcome: PassOutcome, at: float) -> None:
    """Count a finished pass; ``at`` is its UNIX time."""
    PASSES.labels(outcome).inc()
    LAST_PASS.set(at)


def serve(port: int | None) -> None:
    """Serve REGISTRY on ``port`` (all interfaces); None: no server. A busy port is logged, not fatal."""
    if port is None:
        return
    try:
        start_http_server(port, registry=REGISTRY)
    except OSError as exc:
        logger.error(
            "cannot serve the stream watch's metrics on port %d (AUTH0_EVENTS_METRICS_PORT): %s", port, exc
        )
        return
    logger.info("serving the stream watch's metrics at http://0.0.0.0:%d/metrics", port)
