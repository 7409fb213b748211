"""The dead-letter queues over AMQP: list, show, replay and purge ``<queue>.dlq`` without losing a message.

Reading is ``basic.get`` without ack. A message fetched that way stays the broker's until it is acked:
when the channel closes (or the connection drops, or this process dies) RabbitMQ puts every unacked
message back in its queue, at its original position. So a message is acked only once its fate is
settled: replay acks it after the broker confirmed its copy in the work queue, purge acks what it
deletes; everything else is left unacked and returns in place.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from amqp.exceptions import ChannelError, MessageNacked, NotFound
from kombu.connection import Connection
from kombu.messaging import Producer
from sqlalchemy import select
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from cli.pacing import Pacer
from kernel import amqp_properties
from kernel.record_limits import MAX_RECORD_DEPTH, carry_problem
from kernel.routing import DLQ_SUFFIX
from kernel.storage.db import session_scope
from kernel.storage.explain import error_reason, missing_sqlite_file
from kernel.storage.models import Event, utcnow
from kernel.topology import EVENTS_EXCHANGE
from kernel.wire import HEADER_PREFIX, REASON_HEADER, REFUSED_AT_HEADER, SOURCE_HEADER

# RabbitMQ's records of earlier dead-letterings, and the worker's of a refusal (tasks/refusal.py); a
# replayed message starts a new life without them.
DEATH_HEADER_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", HEADER_PREFIX)
#: The longest age filter: a century (anything longer is a typo).
MAX_DURATION = timedelta(days=36500)
_LEDGER_CHUNK = 500
NO_ROUTE = 312  # AMQP reply code of a mandatory message returned unroutable


class UnknownQueue(ValueError):
    """Raised when a queue asked for is neither a configured work queue nor its DLQ."""


class PublishRefused(Exception):
    """Raised when the broker did not take a replayed copy; its original stays in the DLQ."""


class LedgerUnavailable(Exception):
    """Raised when the ledger cannot be read; the reasons then come from RabbitMQ's x-death alone."""


@dataclass(frozen=True)
class DeadLetter:
    """One message of a DLQ: the event it carries and the facts of its dead-lettering."""

    dlq: str
    source_queue: str
    log_id: str | None
    event_type: str | None
    task_id: str | None
    retries: int
    died_at: datetime | None
    death_reason: str | None
    headers: Mapping[str, Any]
    properties: Mapping[str, Any]
    body: str | bytes
    task_args: Sequence[Any] = ()
    task_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: Why the worker refused the message, when it did (tasks/consumer.py) rather than RabbitMQ.
    refusal: str | None = None

    @property
    def tries(self) -> int:
        """How many times the event was tried: the first attempt plus Celery's retries."""
        return self.retries + 1

    @property
    def record(self) -> Any:
        """The Auth0 record as the receiver accepted it (the task's first argument), None if unreadable."""
        return self.task_args[0] if self.task_args else None


@dataclass(frozen=True)
class Selection:
    """Which messages a command acts on; an empty field does not filter."""

    types: frozenset[str] = frozenset()
    log_ids: frozenset[str] = frozenset()
    older_than: timedelta | None = None
    newer_than: timedelta | None = None
    limit: int | None = None

    @property
    def filters_messages(self) -> bool:
        """Whether some messages of a DLQ may be left out (purge then cannot empty the whole queue)."""
        ages = (self.older_than, self.newer_than, self.limit)
        return bool(self.types or self.log_ids) or any(value is not None for value in ages)

    def matches(self, letter: DeadLetter, now: datetime) -> bool:
        """Whether ``letter`` passes every filter; age filters need the x-death time."""
        if self.types and letter.event_type not in self.types:
            return False
        if self.log_ids and letter.log_id not in self.log_ids:
            return False
        if self.older_than is None and self.newer_than is None:
            return True
        if letter.died_at is None:
            return False
        age = now - letter.died_at
        too_young = self.older_than is not None and age < self.older_than
        too_old = self.newer_than is not None and age > self.newer_than
        return not (too_young or too_old)


@dataclass
class Tally:
    """What a command did to one DLQ: the messages it took (replayed or purged) out of ``depth``."""

    dlq: str
    depth: int
    taken: int = 0
    log_ids: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        """Messages that were in the DLQ when the command began and are still there."""
        return max(self.depth - self.taken, 0)

    def add(self, letter: DeadLetter) -> None:
        """Count ``letter`` as taken."""
        self.taken += 1
        self.log_ids.append(letter.log_id or "-")


@dataclass(frozen=True)
class TallyReport:
    """The tallies of a replay or purge; when not ``applied`` (dry run, declined) they say what would be."""

    tallies: list[Tally]
    applied: bool


@dataclass
class Listing:
    """One DLQ: its message count (None when the broker has no such queue) and the messages shown."""

    dlq: str
    depth: int | None
    letters: list[DeadLetter] = field(default_factory=list)


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger knows of an event: its state, attempts and the last failure's reason."""

    state: str
    attempts: int
    last_error: str | None


def select_queues(work_queues: Sequence[str], requested: Iterable[str]) -> list[str]:
    """The DLQs of the ``requested`` work queues (named as ``auth0.ss`` or ``auth0.ss.dlq``), else of all.

    Raises UnknownQueue naming the configured work queues.
    """
    chosen: list[str] = []
    for name in requested:
        work_queue = name.removesuffix(DLQ_SUFFIX)
        if work_queue not in work_queues:
            raise UnknownQueue(
                f"{name!r} is not a configured work queue (AUTH0_EVENTS_ROUTES): {', '.join(work_queues)}"
            )
        if work_queue + DLQ_SUFFIX not in chosen:
            chosen.append(work_queue + DLQ_SUFFIX)
    return chosen or [name + DLQ_SUFFIX for name in work_queues]


_DURATION_PART = re.compile(r"(\d+)([smhd])")
_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``10m``, ``2h``, ``1d`` or a sum such as ``1h30m``, over 0 and up to MAX_DURATION.

    Raises ValueError otherwise.
    """
    compact = text.strip().lower()
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(number + unit for number, unit in parts) != compact:
        raise ValueError(f"{text!r} is not a duration such as 90s, 10m, 2h, 1d or 1h30m")
    too_long = ValueError(f"{text!r} is longer than {MAX_DURATION.days} days")
    if any(len(number) > 12 for number, _unit in parts):
        raise too_long  # before int(), which refuses 4,300 digits and more with its own message
    seconds = sum(int(number) * _SECONDS_PER_UNIT[unit] for number, unit in parts)
    if seconds > MAX_DURATION.total_seconds():
        raise too_long
    if not seconds:
        raise ValueError(f"{text!r} is not longer than 0")
    return timedelta(seconds=seconds)


def read_dead_letter(message: Any, dlq: str) -> DeadLetter:
    """Describe a kombu message fetched from ``dlq``; a body that is not a task message is kept as is.

    Reads only what has the expected type: a letter may hold anything (published by anyone, or refused
    by the worker for what it holds), and must still be listed, shown, replayed or purged.
    """
    headers = dict(message.headers or {})
    death = _rejection(headers.get("x-death"))
    args, kwargs = _task_call(message)
    record = _mapping(args[0] if args else None)
    data = _mapping(record.get("data"))
    refused_at = headers.get(REFUSED_AT_HEADER)
    return DeadLetter(
        dlq=dlq,
        # The worker's refusal is the message's last death, and names the work queue; so does the entry
        # RabbitMQ wrote on a rejection (x-death may also hold earlier ones, such as the expiries of a
        # delayed retry); the DLQ's routing key (the work queue's x-dead-letter-routing-key) and the
        # DLQ's own name say the same.
        source_queue=_text(headers.get(SOURCE_HEADER))
        or _text(death.get("queue"))
        or _text(message.delivery_info.get("routing_key"))
        or dlq.removesuffix(DLQ_SUFFIX),
        log_id=_text(kwargs.get("log_id")) or _text(record.get("log_id")),
        event_type=_text(kwargs.get("event_type")) or _text(data.get("type")),
        task_id=_text(headers.get("id")),
        retries=headers["retries"] if _count(headers.get("retries")) else 0,
        died_at=_as_utc(refused_at) or _as_utc(death.get("time")),
        death_reason=_text(death.get("reason")),
        headers=headers,
        properties={key: value for key, value in message.properties.items() if key != "application_headers"},
        body=message.body,
        task_args=args,
        task_kwargs=kwargs,
        refusal=_text(headers.get(REASON_HEADER)),
    )


def _rejection(x_death: Any) -> Mapping[str, Any]:
    # x-death lists the most recent death first; delays through TTL queues add "expired" entries (a retry
    # through native delayed delivery: ('rejected', <work queue>), ('expired', 'celery_delayed_2')), so the
    # work queue is the one the consumer rejected the message from.
    entries = [entry for entry in x_death if isinstance(entry, Mapping)] if isinstance(x_death, list) else []
    rejected = [entry for entry in entries if entry.get("reason") == "rejected"]
    return (rejected or entries or [{}])[0]


def _task_call(message: Any) -> tuple[list[Any], dict[str, Any]]:
    """The args and kwargs of a Celery protocol 2 JSON body; empty when the body is something else.

    Args nested too deep to show (or to serialize again) are left out: the body is then shown as text.
    """
    if message.content_type != "application/json":
        return [], {}
    body = message.body
    try:
        text = body if isinstance(body, str) else body.decode(message.content_encoding or "utf-8")
        decoded = json.loads(text)
    except Exception:  # noqa: BLE001 - not JSON, not UTF-8, or too deep to decode (RecursionError)
        return [], {}
    if isinstance(decoded, list) and len(decoded) == 3:
        args, kwargs, _embed = decoded
        if isinstance(args, list) and isinstance(kwargs, dict):
            return ([] if any(map(carry_problem, args)) else args), kwargs
    return [], {}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _as_utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    # py-amqp decodes AMQP timestamps as naive UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def queue_depths(connection: Connection, dlqs: Sequence[str]) -> dict[str, int | None]:
    """Each DLQ's ready messages now; None for a queue the broker does not have (never declared)."""
    depths: dict[str, int | None] = {}
    for dlq in dlqs:
        # A passive declare of a missing queue closes its channel (404), hence one channel per queue.
        channel = connection.channel()
        try:
            depths[dlq] = channel.queue_declare(queue=dlq, passive=True).message_count
        except NotFound:
            depths[dlq] = None
        finally:
            channel.close()
    return depths


@contextmanager
def borrowing(connection: Connection) -> Iterator[Any]:
    """A channel to ``basic.get`` messages on; whatever it did not ack goes back, in place, when it closes.

    Safe by construction: an unacked message still belongs to its queue. Closing the channel, as here,
    makes RabbitMQ requeue each one at its original position; so does a dropped connection or a killed
    process. Their ``redelivered`` flag is set, which nothing reads from a DLQ, and a replay publishes a
    fresh copy anyway. Holding them until the end (rather than a ``basic.nack(requeue=True)`` each,
    which would put a message back at the head, to be fetched again at once) keeps a scan from fetching
    a message twice. While held they are invisible to other readers; and RabbitMQ's consumer_timeout
    (30 min) closes a channel that holds one longer, which again only requeues them.
    """
    # A letter's headers may be nested too deep to decode, or name a compression (kernel/amqp_properties.py).
    amqp_properties.install()
    channel = connection.channel()
    try:
        yield channel
    finally:
        try:
            channel.close()
        except (*connection.connection_errors, *connection.channel_errors):
            pass  # the connection is gone, which requeues them just the same


def fetch(channel: Any, dlq: str, depth: int) -> Iterator[tuple[DeadLetter, Any]]:
    """Get, without ack, the ``depth`` messages ``dlq`` held when it was counted, oldest first.

    Stopping at that count means a replayed message that is dead-lettered again meanwhile (it joins the
    tail) is not taken round a second time.
    """
    for _ in range(depth):
        raw = channel.basic_get(queue=dlq, no_ack=False)
        if raw is None:
            return
        message = channel.message_to_python(raw)
        yield read_dead_letter(message, dlq), message


def _matching(
    channel: Any, tallies: Sequence[Tally], selection: Selection, now: datetime
) -> Iterator[tuple[Tally, DeadLetter, Any]]:
    """Each message that ``selection`` matches, DLQ after DLQ, until its limit."""
    taken = 0
    for tally in tallies:
        for letter, message in fetch(channel, tally.dlq, tally.depth):
            if not selection.matches(letter, now):
                continue
            yield tally, letter, message
            taken += 1
            if selection.limit is not None and taken >= selection.limit:
                return


def list_dead_letters(
    connection: Connection, dlqs: Sequence[str], selection: Selection, now: datetime | None = None
) -> list[Listing]:
    """Count each DLQ and read the messages ``selection`` matches; nothing is acked, nothing moves."""
    depths = queue_depths(connection, dlqs)
    listings = {dlq: Listing(dlq, depth) for dlq, depth in depths.items()}
    tallies = [Tally(dlq, depth or 0) for dlq, depth in depths.items()]
    with borrowing(connection) as channel:
        for tally, letter, _message in _matching(channel, tallies, selection, now or utcnow()):
            listings[tally.dlq].letters.append(letter)
    return list(listings.values())


def replay_headers(headers: Mapping[str, Any], task_id: str) -> dict[str, Any]:
    """The headers of a replayed message: a new task id, retries 0, no death records, no schedule.

    A new id because an interrupted replay can publish a message twice: two copies sharing one task id
    could both take over that task's ledger claims at once; with distinct ids the ledger treats the second
    as the duplicate it is. ``replayed_from`` keeps the dead task's id for the trail.
    """
    kept = {key: value for key, value in headers.items() if not key.startswith(DEATH_HEADER_PREFIXES)}
    kept["replayed_from"] = headers.get("id")
    kept["id"] = task_id
    kept["retries"] = 0
    # An eta or expiry left from the message's first life would delay or discard the replay.
    kept["eta"] = None
    kept["expires"] = None
    return kept


def publish_copy(producer: Producer, letter: DeadLetter, confirm_timeout: float) -> None:
    """Publish ``letter`` to its work queue; returns once the broker confirmed it.

    Raises PublishRefused when the broker nacks the copy or (thanks to ``mandatory``) returns it because
    no queue is bound to the routing key; a confirm that does not come in time raises TimeoutError.
    """
    what = f"the copy of {letter.log_id or letter.task_id} from {letter.dlq}"
    try:
        _publish(producer, letter, confirm_timeout)
    except MessageNacked as exc:
        raise PublishRefused(f"the broker refused {what} (basic.nack)") from exc
    except ChannelError as exc:
        if getattr(exc, "reply_code", None) != NO_ROUTE:
            raise
        raise PublishRefused(
            f"no queue is bound to routing key {letter.source_queue!r} on exchange "
            f"{EVENTS_EXCHANGE.name!r}, so the broker returned {what}: is the work queue declared?"
        ) from exc


def _publish(producer: Producer, letter: DeadLetter, confirm_timeout: float) -> None:
    properties = letter.properties
    task_id = str(uuid.uuid4())
    producer.publish(
        letter.body,
        exchange=EVENTS_EXCHANGE.name,
        routing_key=letter.source_queue,
        headers=replay_headers(letter.headers, task_id),
        # Given the content type, kombu sends the body as it is instead of serializing it again.
        content_type=properties.get("content_type") or "application/octet-stream",
        content_encoding=properties.get("content_encoding") or "binary",
        priority=properties.get("priority") or 0,
        correlation_id=task_id,
        reply_to=properties.get("reply_to"),
        delivery_mode=2,
        mandatory=True,
        retry=False,
        declare=[],
        confirm_timeout=confirm_timeout,
    )


def replay(
    connection: Connection,
    dlqs: Sequence[str],
    selection: Selection,
    *,
    rate: float | None = None,
    dry_run: bool = False,
    confirm_timeout: float = 10.0,
    on_each: Callable[[DeadLetter], None] | None = None,
    now: datetime | None = None,
) -> TallyReport:
    """Move the messages ``selection`` matches back to their work queues, oldest first.

    Each copy is confirmed by the broker before its original is acked, so an interruption at any point
    leaves every message in the DLQ, or in its work queue, or (between the two steps) in both: the
    ledger makes the duplicate harmless. A publish the broker refuses stops the replay, leaving that
    message and the rest in the DLQ. ``dry_run`` reads and counts but neither publishes nor acks.
    """
    tallies = [Tally(dlq, depth or 0) for dlq, depth in queue_depths(connection, dlqs).items()]
    pacer = Pacer(rate)
    producer = Producer(connection.channel(), auto_declare=False)
    try:
        with borrowing(connection) as channel:
            for tally, letter, message in _matching(channel, tallies, selection, now or utcnow()):
                if not dry_run:
                    pacer.wait()
                    publish_copy(producer, letter, confirm_timeout)
                    message.ack()
                tally.add(letter)
                if on_each is not None:
                    on_each(letter)
    finally:
        try:
            producer.channel.close()
        except (*connection.connection_errors, *connection.channel_errors):
            pass
    return TallyReport(tallies, applied=not dry_run)


def purge(
    connection: Connection,
    dlqs: Sequence[str],
    selection: Selection,
    confirm: Callable[[Sequence[Tally]], bool],
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> TallyReport:
    """Delete the messages ``selection`` matches, once ``confirm`` (shown what would go) agrees.

    Without message filters each DLQ is emptied with ``queue.purge``; with filters only the matching
    messages are acked, and the rest return in place.
    """
    depths = queue_depths(connection, dlqs)
    tallies = [Tally(dlq, depth or 0) for dlq, depth in depths.items()]
    if not selection.filters_messages:
        return _purge_whole(connection, tallies, confirm, dry_run)
    with borrowing(connection) as channel:
        chosen = list(_matching(channel, tallies, selection, now or utcnow()))
        for tally, letter, _message in chosen:
            tally.add(letter)
        if dry_run or (chosen and not confirm(tallies)):
            return TallyReport(tallies, applied=False)
        for _tally, _letter, message in chosen:
            message.ack()
    return TallyReport(tallies, applied=True)


def _purge_whole(
    connection: Connection, tallies: list[Tally], confirm: Callable[[Sequence[Tally]], bool], dry_run: bool
) -> TallyReport:
    for tally in tallies:
        tally.taken = tally.depth
    if dry_run or (any(tally.depth for tally in tallies) and not confirm(tallies)):
        return TallyReport(tallies, applied=False)
    channel = connection.channel()
    try:
        for tally in tallies:
            if tally.depth:
                # What arrived since the count goes too: the answer is the number actually deleted.
                tally.taken = tally.depth = channel.queue_purge(queue=tally.dlq) or 0
    finally:
        channel.close()
    return TallyReport(tallies, applied=True)


def ledger_entries(database_url: str, log_ids: Iterable[str]) -> dict[str, LedgerEntry]:
    """The ledger's entry for each of ``log_ids`` it has; raises LedgerUnavailable when unreadable."""
    wanted = sorted({log_id for log_id in log_ids if _could_be_stored(log_id)})
    if not wanted:
        return {}
    _require_ledger_file(database_url)
    entries: dict[str, LedgerEntry] = {}
    columns = (Event.log_id, Event.state, Event.attempts, Event.last_error)
    try:
        with session_scope(database_url, read_only=True) as session:
            for start in range(0, len(wanted), _LEDGER_CHUNK):
                chunk = wanted[start : start + _LEDGER_CHUNK]
                for log_id, state, attempts, last_error in session.execute(
                    select(*columns).where(Event.log_id.in_(chunk))
                ):
                    entries[log_id] = LedgerEntry(state, attempts, last_error)
    except SQLAlchemyError as exc:
        raise LedgerUnavailable(f"cannot read the ledger: {error_reason(exc)}") from exc
    return entries


def _could_be_stored(log_id: str) -> bool:
    """Whether the ledger could hold ``log_id``: one it cannot is in no entry (and fails a query)."""
    if "\x00" in log_id or len(log_id) > Event.log_id.type.length:
        return False
    try:
        log_id.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _require_ledger_file(database_url: str) -> None:
    try:
        missing = missing_sqlite_file(database_url)
    except ArgumentError as exc:
        raise LedgerUnavailable("DATABASE_URL is not a database URL") from exc
    if missing:
        raise LedgerUnavailable(f"no ledger at {missing}")


def reason(letter: DeadLetter, ledger: Mapping[str, LedgerEntry]) -> str:
    """Why the message was dead-lettered: the worker's refusal, the ledger's last error, or x-death's.

    A refusal first: it is about this very message, while the ledger's entry for its log_id may be
    about another message of the same event (the one a replay copied, or a valid one).
    """
    if letter.refusal:
        return f"refused by the worker: {letter.refusal}"
    entry = ledger.get(letter.log_id or "")
    if entry is not None and entry.last_error:
        return entry.last_error
    if letter.death_reason:
        return f"{letter.death_reason} by {letter.source_queue} (the ledger has no reason)"
    return "unknown (no reason in the ledger, no x-death header)"


def summary(letter: DeadLetter, ledger: Mapping[str, LedgerEntry]) -> dict[str, Any]:
    """The fields ``dlq list`` shows for one message, JSON-ready."""
    return {
        "log_id": letter.log_id,
        "event_type": letter.event_type,
        "reason": reason(letter, ledger),
        "tries": letter.tries,
        "died_at": letter.died_at.isoformat() if letter.died_at else None,
        "source_queue": letter.source_queue,
        "dlq": letter.dlq,
        "task_id": letter.task_id,
    }


def details(letter: DeadLetter, ledger: Mapping[str, LedgerEntry]) -> dict[str, Any]:
    """Everything about one message, JSON-ready: summary, ledger entry, properties, headers, body."""
    entry = ledger.get(letter.log_id or "")
    return {
        **summary(letter, ledger),
        "ledger": None if entry is None else asdict(entry),
        "properties": jsonable(letter.properties),
        "headers": jsonable(letter.headers),
        "record": jsonable(letter.record),
        "task_kwargs": jsonable(letter.task_kwargs),
        "body": None if letter.task_args else jsonable(letter.body),
    }


_TOO_DEEP = f"(nested deeper than {MAX_RECORD_DEPTH} levels: not shown)"


def jsonable(value: Any, depth: int = 1) -> Any:
    """``value`` with what AMQP tables hold (timestamps, bytes, decimals) turned into JSON types.

    What is nested deeper than a record may be is replaced by a note: going on, this recursion (and
    then the JSON encoder's) could exhaust the stack.
    """
    if isinstance(value, datetime):
        utc = _as_utc(value)
        return utc.isoformat() if utc else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping | list | tuple) and depth > MAX_RECORD_DEPTH + 2:
        return _TOO_DEEP
    if isinstance(value, Mapping):
        return {str(key): jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item, depth + 1) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # Decimal, or the marker of headers that could not be decoded
