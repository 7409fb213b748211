"""A real local HTTP server standing in for a Slack-compatible alert webhook.

It records every POST (path, headers, body) and answers 200 "ok", unless programmed to answer the next
requests otherwise: another status (500, 429, 400…), or only after hanging longer than the client waits::

    with FakeWebhook() as hook:
        hook.answer_next(1, 503)          # the first POST gets 503, the ones after it 200
        hook.hang_next(1, seconds=5)      # or: the next POST gets no answer for 5 s
        ... hook.url ...
        assert len(hook.delivered()) == 1
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Reply:
    """How the fake answers one request."""

    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering (cut short when the server closes).
    hang: float = 0.0


@dataclass(frozen=True)
class ReceivedPost:
    """One request as the fake received it, and the reply it was given."""

    path: str
    headers: dict[str, str]
    body: bytes
    reply: Reply

    @property
    def json(self) -> Any:
        """The body decoded as JSON (raises ValueError when it is not)."""
        return json.loads(self.body)

    @property
    def delivered(self) -> bool:
        """Whether the client got a 2xx answer in time (a hung reply counts as not delivered)."""
        return 200 <= self.reply.status < 300 and not self.reply.hang


class _Server(ThreadingHTTPServer):
    # Join every handler thread on close, so no request outlives the test that made it.
    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout) resets the connection: that is expected, not an error."""


class FakeWebhook:
    """A threaded HTTP server on 127.0.0.1 at a random port; close it (or use ``with``) when done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Reply] = deque()
        self._posts: list[ReceivedPost] = []
        self._release = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The URL to POST alerts to."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/services/alerts"

    def answer_next(
        self, count: int, status: int, body: str = "", headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (and ``body``, ``headers``)."""
        self._program(count, Reply(status, body, headers or {}))

    def hang_next(self, count: int, seconds: float) -> None:
        """Answer the next ``count`` requests only after ``seconds`` (longer than the client's timeout)."""
        self._program(count, Reply(hang=seconds))

    def received(self) -> list[ReceivedPost]:
        """Every POST received so far, whatever it was answered."""
        with self._lock:
            return list(self._posts)

    def delivered(self) -> list[Any]:
        """The JSON bodies of the POSTs answered 2xx in time: the alerts that got through."""
        return [post.json for post in self.received() if post.delivered]

    def close(self) -> None:
        """Release hung requests, stop serving and join every thread."""
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FakeWebhook:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _program(self, count: int, reply: Reply) -> None:
        with self._lock:
            self._script.extend([reply] * count)

    def _next_reply(self, post: tuple[str, dict[str, str], bytes]) -> Reply:
        with self._lock:
            reply = self._script.popleft() if self._script else Reply()
            self._posts.append(ReceivedPost(*post, reply))
        return reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server looks for
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reply = fake._next_reply((self.path, dict(self.headers.items()), body))
                if reply.hang:
                    fake._release.wait(reply.hang)
                payload = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped waiting

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's signature
                """Keep the test output quiet."""

        return Handler
