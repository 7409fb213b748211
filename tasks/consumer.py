"""The worker's consumer: every message on the work queues is checked before Celery takes it.

Set by ``worker_consumer`` in celeryconfig.py. Celery's own handling trusts each message: some crash the
worker (a deep record while it is pickled for the pool, a ``null`` body), some wedge it (an ETA in year
9999 held unacked), some are acked and lost with their body logged (not JSON, an ``expires`` passed).
Here each one is first checked (tasks/task_message.py); one that is not this service's task message is
dead-lettered with the reason (tasks/refusal.py) and the worker takes the next. Celery's own callbacks for
messages it cannot take (undecodable, unknown, invalid) dead-letter the same way instead of acking or
rejecting without a word.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from celery.worker.consumer.control import Control
from celery.worker.consumer.gossip import Gossip
from celery.worker.pidbox import Pidbox

from kernel.amqp_properties import install
from kernel.settings import get_settings
from kernel.storage.models import utcnow
from tasks.refusal import Refuser
from tasks.task_message import decode_failure, max_body_bytes, message_problem

logger = logging.getLogger(__name__)


GOSSIP_STEP = "celery.worker.consumer.gossip:Gossip"
CONTROL_STEP = "celery.worker.consumer.control:Control"
#: Celery's consumer steps replaced by this module's (GuardedConsumer.Blueprint).
SAFE_STEPS = {GOSSIP_STEP: "tasks.consumer:SafeGossip", CONTROL_STEP: "tasks.consumer:SafeControl"}


class SafeGossip(Gossip):  # type: ignore[misc]
    """Celery's Gossip step (other workers' events, on by default) minus its crash on an unreadable event.

    Anyone with broker access can publish to the ``celeryev`` exchange; Gossip reads a ``null`` body's
    ``hostname`` and its TypeError ends the worker.
    """

    def on_message(self, prepare: Any, message: Any) -> None:
        """Celery's handling; an event it cannot read is dropped (the queue is no-ack) and logged."""
        try:
            super().on_message(prepare, message)
        except Exception as exc:  # noqa: BLE001 - no worker event is worth the worker
            logger.warning("ignored a worker event that could not be read (%s)", type(exc).__name__)


class SafePidbox(Pidbox):  # type: ignore[misc]
    """Celery's remote-control mailbox minus its restart on a control message it cannot read.

    Anyone with broker access can publish to the ``celery.pidbox`` exchange. A body that decodes but is
    not a control command (``null``, a list, an object without ``method``) raised in Celery's handling,
    which then closed the mailbox's channel and opened another: the control messages already sent to the
    old one (the queue is no-ack) were lost, a real ``ping`` or ``shutdown`` as well as junk.
    """

    def on_message(self, body: Any, message: Any) -> None:
        """Celery's handling; a message it cannot read is dropped and logged without its body."""
        self._forward_clock()  # as Celery's on_message: senders seldom carry a clock worth adjusting to
        try:
            self.node.handle_message(body, message)
        except (*self.c.connection_errors, *self.c.channel_errors) as exc:
            # Celery's recovery, kept where it is needed: the mailbox's channel is gone, so open another.
            logger.error("the remote-control channel failed (%s); opening another", type(exc).__name__)
            self.reset()
        except Exception as exc:  # noqa: BLE001 - no control message is worth the mailbox
            logger.error("dropped a control message: it is not a control command (%s)", type(exc).__name__)


class SafeControl(Control):  # type: ignore[misc]
    """Celery's Control step with SafePidbox (this service's pools are not green: prefork and threads)."""

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        if not self.is_green:
            self.box = SafePidbox(c)
            self.start, self.stop, self.shutdown = self.box.start, self.box.stop, self.box.shutdown


class GuardedConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer with a check in front of its task message handler (see the module's docstring)."""

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        """Celery's consumer steps, with SafeGossip for Gossip and SafeControl for Control."""

        default_steps = [SAFE_STEPS.get(step, step) for step in Consumer.Blueprint.default_steps]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Before the first delivery is decoded (kernel/amqp_properties.py).
        install()
        settings = get_settings()
        self.largest_body = max_body_bytes(settings.max_body_bytes)
        self.refuser = Refuser(self.app, self.hostname, settings.publish_timeout)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], None]:
        """Celery's handler, called only for messages that pass the check."""
        handle = super().create_task_handler(*args, **kwargs)
        must_propagate = (*self.connection_errors, *self.channel_errors)

        def on_task_received(message: Any) -> None:
            problem = message_problem(message, utcnow(), self.largest_body)
            if problem is not None:
                self.refuse(message, problem)
                return
            try:
                handle(message)
            except must_propagate:
                raise  # the consumer reconnects, and the broker redelivers what was not acked
            except Exception as exc:  # noqa: BLE001 - a message must not stop the worker, even here
                logger.exception("the worker could not take a checked message")
                if not getattr(message, "acknowledged", True):
                    self.refuse(message, f"the worker could not take it ({type(exc).__name__})")

        return on_task_received

    def refuse(self, message: Any, reason: str) -> None:
        """Dead-letter ``message`` with ``reason``; the worker goes on."""
        self.refuser.refuse(message, self._source_queue(message), reason)

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        """kombu could not convert or decode a message: dead-letter it (Celery logs its body and acks it).

        Celery's remote-control consumer reports here too: such a message (of a no-ack queue with no DLQ)
        is dropped as Celery drops it, but without logging its body.
        """
        reason = f"its body cannot be decoded ({decode_failure(exc)})"
        if self._source_queue(message) is not None:
            self.refuse(message, reason)
            return
        logger.error("dropped a control message: %s", reason)
        try:
            message.ack()  # kombu acks nothing on a no-ack consumer; Celery's own handling does the same
        except Exception as ack_exc:  # noqa: BLE001 - the connection may be gone; nothing else to do
            logger.warning("could not ack the control message: %s", type(ack_exc).__name__)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        """Not a task message (Celery logs its body and rejects it without a reason)."""
        self.refuse(message, "it is not a Celery task message")

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        """A task this worker does not know (Celery logs its body and rejects it without a reason)."""
        self.refuse(message, "its task is not registered in this worker")

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        """A task message Celery finds invalid (Celery logs its body and rejects it without a reason)."""
        self.refuse(message, f"Celery found it invalid ({type(exc).__name__})")

    def shutdown(self) -> None:
        """Close the refusals' connection too."""
        super().shutdown()
        self.refuser.close()

    def _source_queue(self, message: Any) -> str | None:
        """The queue the message was delivered from, by its consumer tag; None when unknown.

        Not its routing key: a message delayed by native delayed delivery arrives with another one.
        """
        tag = (getattr(message, "delivery_info", None) or {}).get("consumer_tag")
        # kombu keeps each queue's consumer tag only in this private mapping.
        tags = getattr(self.task_consumer, "_active_tags", None) or {}
        return next((queue for queue, queue_tag in tags.items() if queue_tag == tag), None)
