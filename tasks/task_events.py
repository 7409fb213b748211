"""The worker's task-event dispatcher: only the consumer's thread publishes Flower's events.

Under the threads pool a task's events (task-started, task-succeeded, …) are sent from the pool thread
that ran it. Celery's EventDispatcher buffers them for the consumer's event loop, except that the sender
flushes the buffer itself once it holds 24 events (``buffer_limit``). That flush publishes with publisher
confirms and waits for the confirm in ``drain_events`` on the events connection, while the event loop also
reads that connection's socket (Celery registers it there so the broker's heartbeats are read): the loop
can take the confirm, the pool thread then waits for it forever while holding the dispatcher's mutex, and
the consumer stops at its next flush (py-spy of a stalled worker: BENCHMARKS.md, "Workers"). It happened
to bare Celery as to ours, idle on a quiet machine, or until RabbitMQ reset the connection under load.

Here a thread other than the consumer's only buffers and asks the event loop to flush (kombu's
``call_soon``, which is thread-safe and wakes the loop), so one thread publishes and reads, as under the
prefork pool. Without an event loop (no ``on_send_buffered``) Celery's behaviour is kept: nothing else
reads the connection then, and the dispatcher's mutex orders the publishers.

The loop also publishes at most one batch per FLUSH_INTERVAL (or when ``buffer_limit`` events wait):
Celery asks for a flush per event, so a busy worker published a message of one to three events, and
waited for its confirm, for every task; the publishing was a tenth of a threads worker's CPU. Flower sees
an event at most FLUSH_INTERVAL later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from celery.app.events import Events
from celery.events.dispatcher import EventDispatcher
from celery.events.event import group_from
from kombu.asynchronous import get_event_loop

FLUSH_INTERVAL = 0.1  # seconds between two publishes of buffered task events, unless buffer_limit wait


class ConsumerThreadDispatcher(EventDispatcher):  # type: ignore[misc]
    """Celery's dispatcher, publishing only from the thread that made it (the consumer's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._consumer_thread = threading.get_ident()
        # Celery's consumer callback, which has the event loop call flush() soon (from any thread).
        self._ask_loop: Callable[[], None] | None = getattr(self, "on_send_buffered", None)
        if self._ask_loop is not None:
            self.on_send_buffered = self._request_flush
        self._flush_requested = False
        self._flush_timer = False
        self._last_flush = 0.0

    def _elsewhere(self) -> bool:
        """True in a thread other than the consumer's, while an event loop flushes for it."""
        return self._ask_loop is not None and threading.get_ident() != self._consumer_thread

    def _request_flush(self) -> None:
        """Have the event loop flush; one request stands for every event buffered until it runs."""
        if not self._flush_requested and self._ask_loop is not None:
            self._flush_requested = True
            self._ask_loop()

    def _waiting(self) -> int:
        return len(self._outbound_buffer) + sum(len(events) for events in self._group_buffer.values())

    def _defer(self) -> bool:
        """In the consumer's thread: True when this flush waits for a timer (one is set if none is)."""
        hub = get_event_loop() if self._ask_loop is not None else None
        wait = self._last_flush + FLUSH_INTERVAL - time.monotonic()
        if hub is None or wait <= 0 or self._waiting() >= self.buffer_limit:
            return False
        if not self._flush_timer:
            self._flush_timer = True
            hub.call_later(wait, self._timed_flush)
        return True

    def _timed_flush(self) -> None:
        self._flush_timer = False
        self.flush()

    def send(self, type: str, blind: bool = False, **fields: Any) -> Any:  # noqa: A002 - Celery's name
        """Celery's send; elsewhere an event outside the buffered groups waits for the loop's flush too."""
        group = group_from(type)
        if not (self._elsewhere() and self.enabled and group not in self.buffer_group):
            return super().send(type, blind=blind, **fields)
        if self.groups and group not in self.groups:
            return None
        for option in ("utcoffset", "retry", "retry_policy", "Event"):  # send's options, not fields
            fields.pop(option, None)
        event = self._prepare_event(type, fields, blind=blind)
        # flush(errors=True) publishes this deque, in the consumer's thread; appending to it is thread-safe.
        self._outbound_buffer.append((event, type.replace("-", ".")))
        self._request_flush()
        return None

    def flush(self, errors: bool = True, groups: bool = True) -> None:
        """Publish the buffered events; elsewhere, ask the consumer's event loop to (see FLUSH_INTERVAL)."""
        if self._elsewhere():
            self._request_flush()
            return
        if self._defer():
            return
        # Cleared before the buffers are read: an event buffered from here on asks for the next flush.
        self._flush_requested = False
        super().flush(errors=errors, groups=groups)
        self._last_flush = time.monotonic()


class WorkerEvents(Events):  # type: ignore[misc]
    """Celery's ``app.events``, whose Dispatcher is ConsumerThreadDispatcher."""

    dispatcher_cls = "tasks.task_events:ConsumerThreadDispatcher"
