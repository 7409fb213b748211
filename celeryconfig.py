"""Celery settings for every process (receiver, workers, Flower, tools), built from the environment.

Each setting that protects an event says why in the comment above it.
"""

from __future__ import annotations

from kernel.routing import parse_routes
from kernel.settings import get_settings
from kernel.settings import worker_concurrency as _worker_concurrency
from kernel.topology import EVENTS_EXCHANGE, work_queue

_settings = get_settings()
_routes = parse_routes(_settings.routes)

broker_url = _settings.broker_url
broker_connection_retry_on_startup = True
# A channel error (such as consumer_timeout) reconnects instead of shutting the worker down.
broker_channel_error_retry = True
# Retries and replays published by workers wait for the broker's confirm before the original is acked
# (quorum queues need it too: a quorum queue confirms once a majority of its nodes has the message).
broker_transport_options = {"confirm_publish": True}

# Every queue is listed, with its dead-letter arguments; an unlisted name is an error rather than a
# queue silently created without them (which then fails every other declarer with PRECONDITION_FAILED).
# AUTH0_EVENTS_QUEUE_TYPE=quorum puts x-queue-type: quorum in these arguments, which is what Celery looks
# for (celery.utils.quorum_queues) to switch on the two settings below.
task_queues = [work_queue(name, _settings.queue_type) for name in _routes.queues]
task_create_missing_queues = False
task_default_queue = task_queues[0].name
task_default_exchange = EVENTS_EXCHANGE.name
task_default_exchange_type = EVENTS_EXCHANGE.type
task_default_delivery_mode = "persistent"

# Quorum queues do not support global QoS (basic.qos global=True closes the channel): with quorum work
# queues Celery then sets a per-consumer prefetch (worker_prefetch_multiplier x concurrency, static).
# Stated rather than left to the default because a worker without it cannot consume a quorum queue.
worker_detect_quorum_queues = True
# With quorum work queues, a countdown retry is not held unacked in the worker's memory (classic: an ETA
# task kept until its time, which a static prefetch would let block the consumer): Celery publishes it
# through native delayed delivery, RabbitMQ-side TTL queues celery_delayed_27…0 that dead-letter it
# back to auth0.events when due. Needs the topic exchange (kernel/topology.EVENTS_EXCHANGE) and whole
# seconds (tasks/retry_policy.py rounds up). Those queues are quorum too, so a delayed retry survives
# the loss of a node; the broker user needs configure/write permission on the celery_delayed_* names.
broker_native_delayed_delivery_queue_type = "quorum"

task_serializer = "json"
accept_content = ["json"]
result_backend = None
task_ignore_result = True

# At-least-once: ack only after the task has run, reserve one message per process, and turn every
# failure into basic.reject(requeue=False), which RabbitMQ dead-letters to <queue>.dlq.
task_acks_late = True
worker_prefetch_multiplier = 1
task_acks_on_failure = False
# A hard time limit kills the pool child; requeue its message (acking would lose the event).
task_acks_on_timeout = False
# A pool child killed mid-task (OOM killer, SIGKILL) requeues its message; the task counts the
# redelivery as a failed attempt (tasks/retry_policy.decide_redelivery), so a poison event cannot loop.
task_reject_on_worker_lost = True
task_time_limit = _settings.task_time_limit
task_soft_time_limit = max(1, _settings.task_time_limit - 15)

# AUTH0_EVENTS_WORKER_POOL (threads by default: the events a worker runs at once share their ledger
# commits, tasks/group_commit.py). The threads pool enforces no time limit: README, "Time limits".
# (A `-P prefork` on the command line does not override this: Celery takes worker_pool instead.)
worker_pool = _settings.worker_pool
# WORKER_CONCURRENCY, or the pool's usual figure (16 threads, 2 processes); `--concurrency` overrides it.
worker_concurrency = _worker_concurrency(_settings)

# Every message on the work queues is checked before Celery takes it; one that is not this service's task
# message (published by anyone with broker access) is dead-lettered with the reason (tasks/consumer.py).
worker_consumer = "tasks.consumer:GuardedConsumer"

# Flower sees tasks from the moment the receiver publishes them.
worker_send_task_events = True
task_send_sent_event = True
task_track_started = True

# Registers the enabled built-in handlers and AUTH0_EVENTS_PLUGINS in every worker at start-up.
imports = ["tasks.plugins"]
