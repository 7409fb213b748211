"""`auth0-events dlq` and cli.dlq.dead_letters against the real RabbitMQ, with real workers dead-lettering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from kombu import Producer

from cli.dlq import dead_letters
from cli.dlq.command import dlq
from cli.dlq.dead_letters import DeadLetter, Selection
from cli.pacing import Pacer
from kernel.amqp_properties import Unreadable
from kernel.topology import DEAD_LETTER_EXCHANGE, dead_letter_queue
from tests.helpers import (
    AUTH,
    MAX_RETRIES,
    WorkerProcess,
    as_jsonl,
    count_lines,
    make_record,
    take_messages,
    wait_for,
    with_action,
)

pytestmark = pytest.mark.worker
CLI = Path(sys.executable).parent / "auth0-events"
PERMANENT_REASON = "permanent error: PermanentError: user does not exist upstream"


def new_queue() -> str:
    """A work queue of the test's own."""
    return f"test.{uuid.uuid4().hex[:10]}"


def invoke(routes: str, *args: str, input: str | None = None, **env: str) -> Result:
    """Run ``auth0-events dlq ARGS`` in-process with the test's routes and the workers' ledger."""
    environment = {"AUTH0_EVENTS_ROUTES": routes, "DATABASE_URL": os.environ["DATABASE_URL"], **env}
    return CliRunner().invoke(dlq, list(args), env=environment, input=input)


def ok(result: Result) -> Result:
    """Insist the command succeeded."""
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def depth(broker: Any, queue: str) -> int:
    """Ready messages in ``queue`` now."""
    with broker.channel() as channel:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)


def in_dlq(broker: Any, queue: str) -> list[str]:
    """The log_ids in ``queue``'s DLQ, in order (read without taking them)."""
    [listing] = dead_letters.list_dead_letters(broker, [queue + ".dlq"], Selection())
    return [letter.log_id or "-" for letter in listing.letters]


def dead_letter(
    make_app: Any,
    start_worker: Any,
    broker: Any,
    routes: str,
    queues: list[str],
    records: list[dict[str, Any]],
) -> WorkerProcess:
    """Start a worker on ``queues``, POST ``records`` and wait until each failing one is dead-lettered."""
    worker: WorkerProcess = start_worker(queues, env={"AUTH0_EVENTS_ROUTES": routes})
    response = (
        make_app(routes=routes).test_client().post("/webhooks/auth0", data=as_jsonl(records), headers=AUTH)
    )
    assert response.status_code == 202, response.json
    assert response.json["accepted"] == len(records)
    expected = len(records)
    wait_for(
        lambda: sum(depth(broker, queue + ".dlq") for queue in queues) == expected,
        what=f"{expected} dead-lettered messages",
    )
    return worker


def records(event_type: str, action: str, count: int) -> list[dict[str, Any]]:
    """``count`` records of ``event_type`` that tests/plugin_handlers.py treats as ``action`` says."""
    return [with_action(make_record(event_type), action) for _ in range(count)]


def ledger(log_ids: list[str]) -> dict[str, dead_letters.LedgerEntry]:
    """The ledger's entries for ``log_ids``, as the workers wrote them."""
    return dead_letters.ledger_entries(os.environ["DATABASE_URL"], log_ids)


def effects(effects_dir: Path, log_ids: list[str]) -> list[int]:
    """How many times each event's effect happened."""
    return [count_lines(effects_dir, "effects.log", f"effect {log_id}") for log_id in log_ids]


def test_list_counts_and_describes_each_message_with_the_reason_from_the_ledger(
    make_app: Any, start_worker: Any, broker: Any
) -> None:
    """`list --json` counts the DLQ and gives each message's type, ledger reason, tries, death, source."""
    queue = new_queue()
    routes = f"s={queue},f={queue}"
    permanent_s, permanent_f = records("s", "permanent", 1) + records("f", "permanent", 1)
    [exhausted] = records("s", "always_fail", 1)
    dead_letter(make_app, start_worker, broker, routes, [queue], [permanent_s, permanent_f, exhausted])

    output = json.loads(ok(invoke(routes, "list", "--queue", queue, "--json")).output)

    [listing] = output["queues"]
    assert (listing["queue"], listing["messages"], listing["declared"]) == (f"{queue}.dlq", 3, True)
    shown = {message["log_id"]: message for message in listing["shown"]}
    assert set(shown) == {permanent_s["log_id"], permanent_f["log_id"], exhausted["log_id"]}
    assert shown[permanent_f["log_id"]]["event_type"] == "f"
    assert shown[permanent_s["log_id"]]["reason"] == PERMANENT_REASON
    assert shown[exhausted["log_id"]]["reason"] == (
        f"gave up after {MAX_RETRIES} retries: RuntimeError: this handler always fails"
    )
    assert [shown[r["log_id"]]["tries"] for r in (permanent_s, exhausted)] == [1, MAX_RETRIES + 1]
    for message in shown.values():
        assert message["source_queue"] == queue
        died_at = datetime.fromisoformat(message["died_at"])
        assert timedelta(0) <= datetime.now(UTC) - died_at < timedelta(minutes=5)
    assert depth(broker, f"{queue}.dlq") == 3


def test_list_filters_by_type_limits_and_leaves_the_queue_as_it_was(
    make_app: Any, start_worker: Any, broker: Any, tmp_path: Path
) -> None:
    """The table shows the count and the messages; --type and --limit narrow it; nothing moves or reorders."""
    queue = new_queue()
    routes = f"s={queue},f={queue}"
    batch = records("s", "permanent", 2) + records("f", "permanent", 1)
    dead_letter(make_app, start_worker, broker, routes, [queue], batch)
    before = in_dlq(broker, queue)

    table = ok(invoke(routes, "list", "--queue", queue)).output
    assert f"{queue}.dlq: 3 message(s)" in table
    assert all(record["log_id"] in table for record in batch)
    assert PERMANENT_REASON in table

    only_f = ok(invoke(routes, "list", "--queue", f"{queue}.dlq", "--type", "f")).output
    assert batch[2]["log_id"] in only_f
    assert batch[0]["log_id"] not in only_f
    assert batch[1]["log_id"] not in only_f

    limited = ok(invoke(routes, "list", "--queue", queue, "--limit", "1"))
    assert batch[0]["log_id"] in limited.stdout
    assert batch[1]["log_id"] not in limited.stdout
    assert "--limit" in limited.stderr

    no_ledger = ok(invoke(routes, "list", "--queue", queue, DATABASE_URL=f"sqlite:///{tmp_path / 'no.db'}"))
    assert f"rejected by {queue} (the ledger has no reason)" in no_ledger.stdout
    assert "warning: no ledger at" in no_ledger.stderr

    assert in_dlq(broker, queue) == before


def test_show_prints_the_whole_message_and_fails_for_an_unknown_log_id(
    make_app: Any, start_worker: Any, broker: Any
) -> None:
    """`show` gives headers (x-death), properties, the record and the reason; an unknown log_id exits 1."""
    queue = new_queue()
    routes = f"ss={queue}"
    [record] = records("ss", "permanent", 1)
    dead_letter(make_app, start_worker, broker, routes, [queue], [record])

    text = ok(invoke(routes, "show", record["log_id"])).output
    for expected in (PERMANENT_REASON, "x-death", "correlation_id", "dead_lettered"):
        assert expected in text
    assert record["data"]["user_id"] in text

    [message] = json.loads(ok(invoke(routes, "show", record["log_id"], "--json")).output)["messages"]
    assert message["record"] == record
    assert message["headers"]["x-death"][0]["reason"] == "rejected"
    assert message["properties"]["correlation_id"] == message["headers"]["id"] == message["task_id"]
    assert message["ledger"]["state"] == "dead_lettered"

    missing = invoke(routes, "show", "no-such-log-id")
    assert missing.exit_code == 1
    assert "no message with log_id no-such-log-id" in missing.output
    assert depth(broker, f"{queue}.dlq") == 1


def test_replay_sends_fixed_events_back_to_their_worker_which_processes_them_once(
    make_app: Any, start_worker: Any, broker: Any, effects_dir: Path
) -> None:
    """Replayed permanent_once events run again in the worker, succeed once each, and leave the DLQ empty."""
    queue = new_queue()
    routes = f"s={queue}"
    batch = records("s", "permanent_once", 2)
    log_ids = [record["log_id"] for record in batch]
    dead_letter(make_app, start_worker, broker, routes, [queue], batch)
    assert effects(effects_dir, log_ids) == [0, 0]

    output = json.loads(ok(invoke(routes, "replay", "--queue", queue, "--json")).output)

    assert (output["replayed"], output["skipped"], output["dry_run"]) == (2, 0, False)
    assert output["queues"][0]["log_ids"] == log_ids
    wait_for(lambda: effects(effects_dir, log_ids) == [1, 1], what="the replayed events' effects")
    assert depth(broker, f"{queue}.dlq") == 0
    wait_for(
        lambda: {entry.state for entry in ledger(log_ids).values()} == {"processed"},
        what="the ledger to mark both events processed",
    )


def test_replay_filters_leave_the_others_in_place_and_reset_the_retry_count(
    make_app: Any, start_worker: Any, broker: Any
) -> None:
    """By type, log_id or age only matches move; each copy keeps its task id, with retries 0, no x-death."""
    queue = new_queue()
    routes = f"s={queue},f={queue}"
    first_s, second_s, only_f = records("s", "permanent", 2) + records("f", "permanent", 1)
    [exhausted] = records("s", "always_fail", 1)
    worker = dead_letter(
        make_app, start_worker, broker, routes, [queue], [first_s, second_s, only_f, exhausted]
    )
    worker.stop()  # the copies stay in the work queue, where the test reads them
    dlq = f"{queue}.dlq"
    [listing] = dead_letters.list_dead_letters(broker, [dlq], Selection())
    task_ids = {letter.log_id: letter.task_id for letter in listing.letters}

    old = dead_letters.replay(broker, [dlq], Selection(older_than=timedelta(hours=1)))
    by_type = dead_letters.replay(broker, [dlq], Selection(types=frozenset({"f"})))
    by_id = dead_letters.replay(broker, [dlq], Selection(log_ids=frozenset({second_s["log_id"]})))
    recent = dead_letters.replay(
        broker, [dlq], Selection(log_ids=frozenset({exhausted["log_id"]}), newer_than=timedelta(hours=1))
    )

    assert [outcome.tallies[0].taken for outcome in (old, by_type, by_id, recent)] == [0, 1, 1, 1]
    assert [outcome.tallies[0].skipped for outcome in (old, by_type, by_id, recent)] == [4, 3, 2, 1]
    assert in_dlq(broker, queue) == [first_s["log_id"]]
    copies = take_messages(broker, queue)
    assert [message.decode()[1]["log_id"] for message in copies] == [
        only_f["log_id"],
        second_s["log_id"],
        exhausted["log_id"],
    ]
    for message in copies:
        log_id = message.decode()[1]["log_id"]
        assert message.headers["id"] == message.properties["correlation_id"] != task_ids[log_id]
        assert message.headers["replayed_from"] == task_ids[log_id]
        assert message.headers["retries"] == 0
        assert not [name for name in message.headers if name.startswith(("x-death", "x-first-death"))]
        assert message.delivery_info["exchange"] == "auth0.events"


def test_a_replay_the_broker_cannot_route_stops_and_leaves_every_message_in_the_dlq(
    make_app: Any, start_worker: Any, broker: Any
) -> None:
    """With the work queue gone the broker returns the copy: exit 1 naming the refusal, nothing acked."""
    queue = new_queue()
    routes = f"s={queue}"
    worker = dead_letter(make_app, start_worker, broker, routes, [queue], records("s", "permanent", 2))
    worker.stop()
    before = in_dlq(broker, queue)
    with broker.channel() as channel:
        channel.queue_delete(queue=queue)

    result = invoke(routes, "replay", "--queue", queue)

    assert result.exit_code == 1, result.output
    assert f"no queue is bound to routing key {queue!r} on exchange 'auth0.events'" in result.output
    assert "Traceback" not in result.output
    assert in_dlq(broker, queue) == before


def test_dry_run_prints_what_would_be_replayed_and_changes_nothing(
    make_app: Any, start_worker: Any, broker: Any
) -> None:
    """`replay --dry-run` names each message it would move, yet the DLQ keeps them all, in order."""
    queue = new_queue()
    routes = f"s={queue}"
    batch = records("s", "permanent", 3)
    dead_letter(make_app, start_worker, broker, routes, [queue], batch)
    before = in_dlq(broker, queue)

    output = ok(invoke(routes, "replay", "--queue", queue, "--dry-run")).output

    for record in batch:
        assert f"would replay {queue}.dlq s {record['log_id']}" in output
    assert "would be replayed 3" in output
    assert in_dlq(broker, queue) == before
    assert depth(broker, queue) == 0


def test_rate_bounds_the_replay_speed_and_re_dead_lettered_messages_are_not_replayed_again(
    make_app: Any, start_worker: Any, broker: Any, effects_dir: Path
) -> None:
    """--rate 5 takes at least 1 s for 6 messages; those failing again return to the DLQ, replayed once."""
    queue = new_queue()
    routes = f"s={queue}"
    batch = records("s", "permanent", 6)
    dead_letter(make_app, start_worker, broker, routes, [queue], batch)

    started = time.monotonic()
    output = json.loads(ok(invoke(routes, "replay", "--queue", queue, "--rate", "5", "--json")).output)
    elapsed = time.monotonic() - started

    assert elapsed >= (6 - 1) / 5
    assert output["replayed"] == 6
    wait_for(
        lambda: all(count_lines(effects_dir, "attempts.log", f"attempt {r['log_id']}") == 2 for r in batch),
        what="each replayed event tried again",
    )
    wait_for(lambda: depth(broker, f"{queue}.dlq") == 6, what="the failing events back in the DLQ")


def test_an_interrupted_replay_loses_nothing_and_replaying_again_repeats_no_effect(
    make_app: Any, start_worker: Any, broker: Any, effects_dir: Path
) -> None:
    """SIGKILL mid-replay: each event is in the DLQ or processed; a second replay finishes, once each."""
    queue = new_queue()
    routes = f"s={queue}"
    batch = records("s", "permanent_once", 12)
    log_ids = [record["log_id"] for record in batch]
    dead_letter(make_app, start_worker, broker, routes, [queue], batch)

    replaying = subprocess.Popen(
        [str(CLI), "dlq", "replay", "--queue", queue, "--rate", "4"],
        env={**os.environ, "AUTH0_EVENTS_ROUTES": routes},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: sum(effects(effects_dir, log_ids)) >= 3, what="the replay to get going")
    finally:
        replaying.kill()
        _, stderr = replaying.communicate(timeout=30)
    assert replaying.returncode == -9, stderr.decode()

    def accounted() -> bool:
        left = set(in_dlq(broker, queue))
        done = effects(effects_dir, log_ids)
        return all(log_id in left or count == 1 for log_id, count in zip(log_ids, done, strict=True))

    wait_for(accounted, what="every event in the DLQ or processed")
    assert 0 < depth(broker, f"{queue}.dlq") < len(batch), "the replay was not interrupted mid-way"

    ok(invoke(routes, "replay", "--queue", queue))

    wait_for(
        lambda: effects(effects_dir, log_ids) == [1] * len(batch) and depth(broker, queue) == 0,
        what="every event processed",
    )
    assert depth(broker, f"{queue}.dlq") == 0
    assert effects(effects_dir, log_ids) == [1] * len(batch)


class Crash(Exception):
    """Stands for the replaying process dying."""


def test_a_copy_confirmed_but_not_acked_is_replayed_again_without_a_second_effect(
    make_app: Any, start_worker: Any, broker: Any, effects_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between confirm and ack leaves the original in the DLQ; its second replay is a no-op."""
    queue = new_queue()
    routes = f"s={queue}"
    [record] = records("s", "permanent_once", 1)
    log_id = record["log_id"]
    dead_letter(make_app, start_worker, broker, routes, [queue], [record])
    publish_copy = dead_letters.publish_copy

    def publish_then_crash(*args: Any) -> None:
        publish_copy(*args)
        raise Crash

    monkeypatch.setattr(dead_letters, "publish_copy", publish_then_crash)
    with pytest.raises(Crash):
        dead_letters.replay(broker, [f"{queue}.dlq"], Selection())
    monkeypatch.undo()
    wait_for(lambda: effects(effects_dir, [log_id]) == [1], what="the copy processed")
    assert in_dlq(broker, queue) == [log_id]

    ok(invoke(routes, "replay", "--queue", queue))

    wait_for(lambda: ledger([log_id])[log_id].attempts == 3, what="the second copy delivered")
    wait_for(lambda: ledger([log_id])[log_id].state == "processed", what="the second copy done")
    assert effects(effects_dir, [log_id]) == [1]
    assert depth(broker, f"{queue}.dlq") == 0


def test_purge_asks_first_and_deletes_only_what_the_filters_match(
    make_app: Any, start_worker: Any, broker: Any
) -> None:
    """Purge prompts (no deletes nothing); with filters it removes only matches; without, whole DLQs."""
    logins, failures = new_queue(), new_queue()
    routes = f"s={logins},f={failures}"
    first_s, second_s, only_f = records("s", "permanent", 2) + records("f", "permanent", 1)
    dead_letter(make_app, start_worker, broker, routes, [logins, failures], [first_s, second_s, only_f])

    declined = invoke(routes, "purge", "--type", "f", input="n\n")
    assert declined.exit_code == 1
    assert f"Delete matching 1 message(s) for good from {failures}.dlq (1)?" in declined.output
    assert depth(broker, f"{failures}.dlq") == 1

    dry = ok(invoke(routes, "purge", "--log-id", first_s["log_id"], "--dry-run"))
    assert "would be purged 1" in dry.output
    assert in_dlq(broker, logins) == [first_s["log_id"], second_s["log_id"]]

    by_type = json.loads(ok(invoke(routes, "purge", "--type", "f", "--yes", "--json")).output)
    assert (by_type["purged"], by_type["skipped"]) == (1, 2)
    assert depth(broker, f"{failures}.dlq") == 0
    assert in_dlq(broker, logins) == [first_s["log_id"], second_s["log_id"]]

    assert invoke(routes, "purge", "--queue", logins, input="n\n").exit_code == 1
    assert depth(broker, f"{logins}.dlq") == 2
    whole = ok(invoke(routes, "purge", "--queue", logins, input="y\n"))
    assert f"Delete all 2 message(s) for good from {logins}.dlq (2)?" in whole.output
    assert f"{logins}.dlq  purged 2  skipped 0" in whole.output
    assert depth(broker, f"{logins}.dlq") == 0


@pytest.mark.parametrize("command", [["list"], ["show", "1"], ["replay"], ["purge", "--yes"]])
def test_an_unreachable_broker_exits_3_with_a_message(command: list[str]) -> None:
    """Every command says which broker it cannot reach, exits 3, and prints no traceback."""
    result = invoke("s", *command, BROKER_URL="amqp://guest:secret@127.0.0.1:1//")
    assert result.exit_code == 3, result.output
    assert "cannot reach the broker at amqp://guest:**@127.0.0.1:1//" in result.output
    assert "Traceback" not in result.output
    assert "secret" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "--older-than", "soon"], "'soon' is not a duration"),
        (["purge", "--newer-than", "2x"], "'2x' is not a duration"),
        (["list", "--queue", "auth0.nope"], "'auth0.nope' is not a configured work queue"),
        (["replay", "--rate", "0"], "--rate"),
        (["replay", "--limit", "0"], "--limit"),
        (["replay", "--older-than", "99999999999d"], "'99999999999d' is longer than"),
        (["purge", "--newer-than", "9" * 5000 + "s"], "is longer than"),
        (["purge", "--older-than", "0s"], "'0s' is not longer than 0"),
        (["replay", "--older-than", "2h", "--newer-than", "1h", "--dry-run"], "nothing is both"),
        (["replay", "--rate", "1e-300"], "--rate"),
        (["replay", "--rate", "nan"], "--rate"),
        (["replay", "--rate", "inf"], "--rate"),
        (["purge", "--type", " , ", "--yes"], "' , ' names no event code"),
        (["purge", "--type", "f,,fp", "--yes"], "'f,,fp' has an empty event code"),
        (["list", "--type", ""], "'' names no event code"),
        (["purge", "--log-id", "", "--yes"], "--log-id"),
        (["replay", "--log-id", " "], "--log-id"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    """A bad duration, queue, rate, limit or filter exits 2 naming the problem, before touching the broker."""
    result = invoke("s", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["list", "show", "replay", "purge"])
def test_each_command_has_help(command: str) -> None:
    """`--help` describes each command."""
    result = ok(invoke("s", command, "--help"))
    assert result.output.startswith(f"Usage: dlq {command}")


def test_durations_parse_units_and_sums() -> None:
    """Durations are whole numbers of s, m, h or d, alone or summed."""
    assert dead_letters.parse_duration("10m") == timedelta(minutes=10)
    assert dead_letters.parse_duration("1h30m") == timedelta(hours=1, minutes=30)
    assert dead_letters.parse_duration(" 2D ") == timedelta(days=2)
    for bad in ("", "10", "m", "1.5h", "1h 30m", "-1h"):
        with pytest.raises(ValueError, match="is not a duration"):
            dead_letters.parse_duration(bad)
    assert dead_letters.parse_duration("36500d") == dead_letters.MAX_DURATION
    for too_long in ("36500d1s", "99999999999d", "9" * 13 + "s", "9" * 5000 + "s"):
        with pytest.raises(ValueError, match="is longer than 36500 days"):
            dead_letters.parse_duration(too_long)
    with pytest.raises(ValueError, match="is not longer than 0"):
        dead_letters.parse_duration("0h0m")


def test_pacer_spaces_calls_without_sleeping_when_behind() -> None:
    """The first call is immediate, the next waits 1/rate after it; a late caller is not made to catch up."""
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(4, clock=lambda: now[0], sleep=sleep)
    pacer.wait()
    pacer.wait()
    now[0] += 1.0
    pacer.wait()
    pacer.wait()
    assert slept == [0.25, 0.25]
    Pacer(None, clock=lambda: 0.0, sleep=sleep).wait()
    assert slept == [0.25, 0.25]


def test_replay_headers_reset_retries_and_drop_death_records() -> None:
    """A replayed message gets a new task id (the old one kept), retries 0, no x-death or schedule."""
    headers = {
        "id": "task-1",
        "task": "auth0_events.handle_event",
        "retries": 2,
        "eta": "2026-01-01T00:00:00+00:00",
        "x-death": [{"reason": "rejected"}],
        "x-first-death-queue": "auth0.s",
        "x-last-death-reason": "rejected",
        "x-auth0-events-refused": "its eta is more than 1500 s ahead",
        "x-auth0-events-source-queue": "auth0.s",
    }
    assert dead_letters.replay_headers(headers, "task-2") == {
        "id": "task-2",
        "replayed_from": "task-1",
        "task": "auth0_events.handle_event",
        "retries": 0,
        "eta": None,
        "expires": None,
    }


def test_selection_matches_on_type_log_id_and_age() -> None:
    """Each filter narrows; an age filter leaves out a message without a death time."""
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    letter = DeadLetter(
        dlq="auth0.s.dlq",
        source_queue="auth0.s",
        log_id="900",
        event_type="s",
        task_id="t",
        retries=0,
        died_at=now - timedelta(hours=3),
        death_reason="rejected",
        headers={},
        properties={},
        body=b"",
    )
    assert Selection().matches(letter, now)
    assert Selection(types=frozenset({"s", "f"}), log_ids=frozenset({"900"})).matches(letter, now)
    assert not Selection(types=frozenset({"f"})).matches(letter, now)
    assert Selection(older_than=timedelta(hours=2), newer_than=timedelta(hours=4)).matches(letter, now)
    assert not Selection(older_than=timedelta(hours=4)).matches(letter, now)
    assert not Selection(newer_than=timedelta(hours=2)).matches(letter, now)
    undated = DeadLetter(**{**letter.__dict__, "died_at": None})
    assert not Selection(older_than=timedelta(0)).matches(undated, now)
    # An age filter of 0 still filters: a purge with it must not empty the whole queue.
    assert Selection(newer_than=timedelta(0)).filters_messages
    assert Selection(older_than=timedelta(0)).filters_messages
    assert not Selection().filters_messages


class Fetched:
    """A message as basic.get returns it, for read_dead_letter."""

    def __init__(self, body: Any, headers: dict[str, Any], content_type: str = "application/json") -> None:
        self.body, self.headers, self.content_type = body, headers, content_type
        self.content_encoding = "utf-8"
        self.delivery_info = {"routing_key": "auth0.s"}
        self.properties = {"content_type": content_type, "application_headers": headers}


def test_a_letter_is_read_from_what_has_the_expected_type_only() -> None:
    """Headers of the wrong type are ignored; the worker's refusal gives the reason, source and time."""
    refused_at = datetime(2026, 11, 26, 11, 0)
    garbage: dict[str, Any] = {"x-death": "not a list", "id": ["t"], "retries": True}
    body = json.dumps(task_body(make_record("s", log_id="900"), {"nested": "object"}))
    letter = dead_letters.read_dead_letter(Fetched(body, garbage), "auth0.s.dlq")
    assert (letter.task_id, letter.retries, letter.log_id, letter.source_queue) == (None, 0, "900", "auth0.s")
    delayed = [{"reason": "expired", "queue": "celery_delayed_0", "time": datetime(2026, 11, 26, 10, 0)}]
    refused = {
        "x-death": delayed,  # a retry delayed through native delayed delivery, then refused
        "x-auth0-events-refused": "its body is a JSON null, not Celery's [args, kwargs, embed]",
        "x-auth0-events-source-queue": "auth0.f",
        "x-auth0-events-refused-at": refused_at,
    }
    letter = dead_letters.read_dead_letter(Fetched("null", refused), "auth0.s.dlq")
    assert letter.source_queue == "auth0.f"
    assert letter.died_at == refused_at.replace(tzinfo=UTC)
    assert dead_letters.reason(letter, {}) == (
        "refused by the worker: its body is a JSON null, not Celery's [args, kwargs, embed]"
    )
    ledger = {"900": dead_letters.LedgerEntry("dead_lettered", 1, "an older failure")}
    assert dead_letters.reason(DeadLetter(**{**letter.__dict__, "log_id": "900"}), ledger).startswith(
        "refused"
    )


def test_details_show_what_json_cannot_hold_as_text() -> None:
    """Decimals and undecodable-header markers as text; anything nested too deep as a note."""
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    shown = dead_letters.jsonable({"price": Decimal("1.5"), "marker": Unreadable("why"), "deep": deep})
    assert shown["price"] == "1.5"
    assert shown["marker"] == "Unreadable(reason='why', compression=None)"
    for _ in range(66):  # the mapping is level 1; a record may have 64, and its message 2 more
        shown = shown["deep"] if isinstance(shown, dict) else shown[0]
    assert shown == "(nested deeper than 64 levels: not shown)"


def put_in_dlq(broker: Any, queue: str, body: bytes | list[Any], **headers: Any) -> None:
    """Publish ``body`` straight to ``queue``'s DLQ, as anyone with broker access (or RabbitMQ) could."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with broker.channel() as channel:
        dead_letter_queue(queue).bind(channel).declare()
        Producer(channel).publish(
            data,
            exchange=DEAD_LETTER_EXCHANGE.name,
            routing_key=queue,
            headers={"id": str(uuid.uuid4()), "task": "auth0_events.handle_event", **headers},
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
        )


def task_body(record: Any, log_id: Any, event_type: Any = "s") -> list[Any]:
    """A task message body for ``record`` whose keyword arguments say ``log_id`` and ``event_type``."""
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return [[record], {"event_type": event_type, "log_id": log_id}, embed]


def test_a_bad_filter_never_widens_a_purge_or_replay(broker: Any) -> None:
    """`--type ' , '` selected every message (a purge emptied the DLQ): now a usage error; nothing moves."""
    queue = new_queue()
    routes = f"s={queue},f={queue}"
    for event_type in ("s", "f"):
        record = make_record(event_type)
        put_in_dlq(broker, queue, task_body(record, record["log_id"], event_type))

    for args in (
        ["purge", "--type", " , ", "--yes"],
        ["purge", "--log-id", "", "--yes"],
        ["replay", "--type", ","],
    ):
        result = invoke(routes, *args)
        assert result.exit_code == 2, result.output
    assert depth(broker, f"{queue}.dlq") == 2

    newest_only = json.loads(ok(invoke(routes, "purge", "--newer-than", "1s", "--yes", "--json")).output)
    assert newest_only["purged"] == 0  # no death time: an age filter matches neither
    assert depth(broker, f"{queue}.dlq") == 2


def test_letters_with_hostile_content_are_listed_shown_and_replayed_without_a_crash(
    start_worker: Any, broker: Any, effects_dir: Path
) -> None:
    """A lone surrogate or a terminal escape in a log_id, a record 900 levels deep, a body not JSON."""
    queue = new_queue()
    routes = f"s={queue}"
    surrogate, escape = "900\ud800", "900\x1b]0;owned\x07"
    deep: Any = ["bottom"]
    for _ in range(900):
        deep = [deep]
    put_in_dlq(broker, queue, task_body(make_record("s", log_id=surrogate), surrogate))
    put_in_dlq(broker, queue, task_body(make_record("s", log_id=escape), escape))
    deep_record = make_record("s", details={"nested": deep})
    put_in_dlq(broker, queue, task_body(deep_record, deep_record["log_id"]))
    put_in_dlq(broker, queue, b"not json at all")

    table = ok(invoke(routes, "list"))
    assert "900\\ud800" in table.output
    assert "900\\x1b]0;owned\\x07" in table.output
    assert "\x1b" not in table.output
    listed = json.loads(ok(invoke(routes, "list", "--json")).output)["queues"][0]
    assert [message["log_id"] for message in listed["shown"]] == [
        surrogate,
        escape,
        deep_record["log_id"],
        None,
    ]
    for log_id in (surrogate, deep_record["log_id"]):
        shown = ok(invoke(routes, "show", log_id))
        assert "Traceback" not in shown.output
    deep_json = json.loads(ok(invoke(routes, "show", deep_record["log_id"], "--json")).output)["messages"][0]
    assert deep_json["record"] is None  # too deep to show as a record: the body is shown as text instead
    assert deep_json["body"].startswith('[[{"log_id"')
    dry = ok(invoke(routes, "replay", "--dry-run"))
    assert "would replay" in dry.output
    assert f"would replay {queue}.dlq s 900\\ud800" in dry.output

    worker = start_worker([queue], env={"AUTH0_EVENTS_ROUTES": routes})
    assert json.loads(ok(invoke(routes, "replay", "--json")).output)["replayed"] == 4
    # The worker refuses three again (too deep, not JSON, a log_id no database stores) and runs the fourth.
    wait_for(
        lambda: count_lines(effects_dir, "effects.log", f"effect {escape}") == 1, what="the escape's effect"
    )
    wait_for(lambda: depth(broker, f"{queue}.dlq") == 3, what="the hostile letters back in the DLQ")
    reasons = [
        message["reason"]
        for message in json.loads(ok(invoke(routes, "list", "--json")).output)["queues"][0]["shown"]
    ]
    assert reasons == [
        "refused by the worker: its log_id is not a non-empty UTF-8 string of at most 4096 characters",
        "refused by the worker: record nests deeper than 64 levels of objects and arrays",
        "refused by the worker: its body is not JSON (Expecting value at character 0)",
    ]
    assert worker.process is not None
    assert worker.process.poll() is None


def test_a_message_the_worker_refused_is_listed_shown_and_replayed_with_its_reason(
    start_worker: Any, broker: Any, effects_dir: Path
) -> None:
    """The worker's reason, source queue and time show in list and show; a replay runs the fixable one."""
    queue = new_queue()
    routes = f"s={queue}"
    worker = start_worker([queue], env={"AUTH0_EVENTS_ROUTES": routes})
    nested: Any = []
    for _ in range(70):
        nested = [nested]
    late, deep = make_record("s"), make_record("s", details={"nested": nested})
    for record, eta in ((late, "9999-12-31T00:00:00+00:00"), (deep, None)):
        with broker.channel() as channel:
            Producer(channel).publish(
                task_body(record, record["log_id"]),
                exchange="auth0.events",
                routing_key=queue,
                headers={"id": str(uuid.uuid4()), "task": "auth0_events.handle_event", "eta": eta},
                serializer="json",
                delivery_mode=2,
            )
    wait_for(lambda: depth(broker, f"{queue}.dlq") == 2, what="both refused into the DLQ")

    listed = json.loads(ok(invoke(routes, "list", "--json")).output)["queues"][0]["shown"]
    by_log_id = {message["log_id"]: message for message in listed}
    assert by_log_id[late["log_id"]]["reason"].startswith(
        "refused by the worker: its eta is more than 1500 s"
    )
    assert by_log_id[deep["log_id"]]["reason"] == (
        "refused by the worker: record nests deeper than 64 levels of objects and arrays"
    )
    for message in listed:
        assert message["source_queue"] == queue
        assert (
            timedelta(0)
            <= datetime.now(UTC) - datetime.fromisoformat(message["died_at"])
            < timedelta(minutes=5)
        )
    text = ok(invoke(routes, "show", late["log_id"])).output
    assert "refused by the worker: its eta is more than 1500 s ahead" in text
    assert "x-auth0-events-refused-by" in text
    aged = json.loads(ok(invoke(routes, "replay", "--newer-than", "1h", "--dry-run", "--json")).output)
    assert aged["replayed"] == 2  # their death time is when the worker refused them
    assert json.loads(ok(invoke(routes, "replay", "--older-than", "1h", "--json")).output)["replayed"] == 0

    assert json.loads(ok(invoke(routes, "replay", "--json")).output)["replayed"] == 2
    # The replay drops the eta, so that one runs; the deep one is refused again, with the reason.
    wait_for(
        lambda: count_lines(effects_dir, "effects.log", f"effect {late['log_id']}") == 1, what="late's effect"
    )
    wait_for(lambda: in_dlq(broker, queue) == [deep["log_id"]], what="the deep one back in the DLQ")
    [again] = json.loads(ok(invoke(routes, "list", "--json")).output)["queues"][0]["shown"]
    assert again["reason"].startswith("refused by the worker: record nests deeper")
    assert worker.process is not None
    assert worker.process.poll() is None
