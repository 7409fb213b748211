"""What travels on the queues that every side must agree on: the task's name and the headers of a refusal.

The receiver and the backfill publish task messages under TASK_NAME, which the worker registers its task
as; a worker that refuses a message dead-letters a copy carrying the refusal headers, which the receiver's
/metrics and the ``dlq`` command read.
"""

#: The Celery task every event travels as (the receiver builds its messages; the worker runs them).
TASK_NAME = "auth0_events.handle_event"

#: Where an event came from, the task's optional ``source`` keyword argument and the archive's column:
#: the log stream (the receiver, which leaves the argument out), or a fill from the Management API
#: (`auth0-events backfill`, the stream watch).
STREAM = "stream"
BACKFILL = "backfill"
SOURCES = (STREAM, BACKFILL)

#: Headers the worker adds to the copy of a message it refuses (tasks/refusal.py).
HEADER_PREFIX = "x-auth0-events-"
REASON_HEADER = HEADER_PREFIX + "refused"
SOURCE_HEADER = HEADER_PREFIX + "source-queue"
REFUSED_AT_HEADER = HEADER_PREFIX + "refused-at"
REFUSED_BY_HEADER = HEADER_PREFIX + "refused-by"
COMPRESSION_HEADER = HEADER_PREFIX + "compression"
