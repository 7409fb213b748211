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
"""

from __future__ import annotations

import threading
from typing import Any

from celery.app.events import Events
from celery.events.dispatcher import EventDispatcher
from celery.events.event import group_from


class ConsumerThreadDispatcher(EventDispatcher):  # type: ignore[misc]
    """Celery's dispatcher, publishing only from the thread that made it (the consumer's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._consumer_thread = threading.get_ident()

    def _elsewhere(self) -> bool:
        """True in a thread other than the consumer's, while an event loop flushes for it."""
        return self.on_send_buffered is not None and threading.get_ident() != self._consumer_thread

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
        self.on_send_buffered()
        return None

    def flush(self, errors: bool = True, groups: bool = True) -> None:
        """Publish the buffered events; elsewhere, ask the consumer's event loop to."""
        if self._elsewhere():
            self.on_send_buffered()
            return
        super().flush(errors=errors, groups=groups)


class WorkerEvents(Events):  # type: ignore[misc]
    """Celery's ``app.events``, whose Dispatcher is ConsumerThreadDispatcher."""

    dispatcher_cls = "tasks.task_events:ConsumerThreadDispatcher"
