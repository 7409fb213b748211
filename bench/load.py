"""The load client: POSTs pre-encoded batches over keep-alive HTTP/1.1 connections, one thread per connection.

Closed loop (no ``rate``): each connection sends its next batch as soon as the previous one is answered,
which finds the maximum rate. Open loop (``rate`` requests/s): request k is due at start + k/rate whoever
sends it, and its latency counts from that due time, so a server that falls behind is not hidden by a
client that waits for it (no coordinated omission).
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

PATH = "/webhooks/auth0"


@dataclass
class LoadResult:
    """What one load run saw; latencies in milliseconds."""

    requests: int = 0
    accepted: int = 0
    failed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    connections_opened: int = 0
    elapsed: float = 0.0
    cpu_seconds: float = 0.0
    first_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, the latencies included."""
        result = asdict(self)
        result["statuses"] = dict(self.statuses)
        return result


def run_load(
    base_url: str,
    bodies: Sequence[bytes],
    token: str,
    concurrency: int,
    duration: float,
    rate: float | None = None,
    max_requests: int | None = None,
) -> dict[str, Any]:
    """POST ``bodies`` in turn for ``duration`` s (or ``max_requests``) over ``concurrency`` connections.

    Returns LoadResult.as_dict(); a 202's ``accepted`` count adds to ``accepted``, anything else is failed.
    """
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sequence = itertools.count()
    lock = threading.Lock()
    total = LoadResult()
    start = time.monotonic() + 0.05
    deadline = start + duration

    def connection_loop() -> None:
        own = LoadResult()
        connection = http.client.HTTPConnection(host, port, timeout=60)
        while True:
            index = next(sequence)
            if max_requests is not None and index >= max_requests:
                break
            due = start + index / rate if rate else time.monotonic()
            if due >= deadline:
                break
            if rate:
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            body = bodies[index % len(bodies)]
            sent = time.monotonic()
            began = min(due, sent) if rate else sent
            try:
                if connection.sock is None:
                    own.connections_opened += 1
                connection.request("POST", PATH, body, headers)
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                own.failed += 1
                own.statuses[type(exc).__name__] += 1
                own.first_error = own.first_error or repr(exc)
                connection.close()
                continue
            own.latencies_ms.append((time.monotonic() - began) * 1000)
            own.requests += 1
            own.statuses[str(response.status)] += 1
            if response.status == 202:
                own.accepted += int(json.loads(data)["accepted"])
            else:
                own.failed += 1
                own.first_error = own.first_error or f"{response.status}: {data[:300]!r}"
            if response.will_close:
                connection.close()
        connection.close()
        with lock:
            total.requests += own.requests
            total.accepted += own.accepted
            total.failed += own.failed
            total.statuses.update(own.statuses)
            total.latencies_ms.extend(own.latencies_ms)
            total.connections_opened += own.connections_opened
            total.first_error = total.first_error or own.first_error

    cpu_before = time.process_time()
    threads = [threading.Thread(target=connection_loop) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total.elapsed = time.monotonic() - start
    total.cpu_seconds = round(time.process_time() - cpu_before, 2)
    return total.as_dict()
